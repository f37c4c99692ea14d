"""The generation engine: continuous batching over a paged KV cache, one forward per step for every running request."""
