"""taskhub built-in textgen plugin."""
