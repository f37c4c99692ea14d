"""taskhub built-in multimodal plugin: image captioning and visual chat, decoding through taskhub_textgen."""
