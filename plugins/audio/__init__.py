"""taskhub built-in audio plugin."""
