"""Preallocated key/value cache of a decoder-only transformer, with the mask of which slots hold real tokens."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer for `batch` rows and up to `max_len` tokens.

    Slots are filled left to right for all rows at once (prefill writes T slots, each decode
    step one); `key_valid` says which filled slots are real tokens (left padding is not).
    Buffers are allocated once, so decoding never reallocates or concatenates.
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.k_layers = list(self.k.unbind(0))  # per-layer views [B, n_kv_heads, max_len, head_dim]
        self.v_layers = list(self.v.unbind(0))
        self.key_valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)  # [B, max_len]
        self.max_len = max_len
        self.length = 0  # slots filled, including the ones being written by the current step
        self.start = 0  # first slot of the current step

    @property
    def batch_size(self) -> int:
        return self.key_valid.shape[0]

    def reserve(self, new_valid: torch.Tensor) -> torch.Tensor:
        """Claim the next T slots for a step whose tokens have validity `new_valid` [B, T]; [B, length] mask."""
        t = new_valid.shape[1]
        if self.length + t > self.max_len:
            raise ValueError(f"KV cache full: {self.length} + {t} tokens > max_len {self.max_len}")
        self.start, self.length = self.length, self.length + t
        self.key_valid[:, self.start : self.length] = new_valid
        return self.key_valid[:, : self.length]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's k, v [B, n_kv_heads, T, head_dim] of `layer`; all keys/values so far (views)."""
        k_all, v_all = self.k_layers[layer], self.v_layers[layer]
        k_all[:, :, self.start : self.length] = k
        v_all[:, :, self.start : self.length] = v
        return k_all[:, :, : self.length], v_all[:, :, : self.length]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` [B] in that order (beam search); rows may repeat."""
        n = self.length
        self.k[:, :, :, :n] = self.k[:, rows, :, :n]
        self.v[:, :, :, :n] = self.v[:, rows, :, :n]
        self.key_valid[:, :n] = self.key_valid[rows, :n]

    def nbytes(self) -> int:
        """Bytes held by the buffers (for memory reports)."""
        return self.k.nbytes + self.v.nbytes + self.key_valid.nbytes
