"""Example taskhub plugin: KeyBERT-style keyword extraction."""
