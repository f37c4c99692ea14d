"""taskhub built-in text plugin."""
