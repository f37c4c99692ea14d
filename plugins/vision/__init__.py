"""taskhub built-in vision plugin."""
