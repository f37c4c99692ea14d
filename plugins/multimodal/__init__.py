"""taskhub built-in multimodal plugin."""
