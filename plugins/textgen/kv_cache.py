"""Preallocated key/value cache of a decoder-only transformer, with the mask of which slots hold real tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

AttendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (q, k, v, mask) -> out


class Cache(Protocol):
    """What a cache layout does for the model: build its masks once per forward, run attention per layer.

    The static KVCache below and the engine's paged cache both implement it; `attend_fn` is
    the layer's attention math (model.attend with its scale), so every layout shares it.
    """

    def prepare(self, valid: torch.Tensor, windows: set[int | None]) -> dict[int | None, Any]:
        """Claim room for this forward's tokens (valid [B, T]: False = padding); window -> mask."""
        ...

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, attend_fn: AttendFn
    ) -> torch.Tensor:
        """Store k, v [B, kv_heads, T, hd] of `layer`, attend q [B, heads, T, hd] over everything stored."""
        ...


def attention_mask(key_valid: torch.Tensor, start: int, window: int | None) -> torch.Tensor:
    """Boolean mask [B, 1, T, S] (True = attend) for queries at slots start..S-1 over keys 0..S-1.

    A query sees real keys at or before its own slot, and with a window only the last
    `window` slots (transformers' index rule `key > query - window`). Every query also
    sees itself, so padding rows never softmax over nothing (their outputs are unused).
    """
    S = key_valid.shape[1]
    if S - start == 1:  # one new token (decoding): a real query sees every real key in its window
        mask = key_valid[:, None, None, :]
        if window is not None and S > window:
            mask = mask & (torch.arange(S, device=mask.device) > start - window)
        return mask
    q = torch.arange(start, S, device=key_valid.device)[:, None]  # [T, 1]
    k = torch.arange(S, device=key_valid.device)[None, :]  # [1, S]
    visible = k <= q
    if window is not None:
        visible = visible & (k > q - window)
    mask = (key_valid[:, None, :] & visible) | (k == q)  # [B, T, S]
    return mask[:, None]


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
        shape = (batch, n_kv_heads, max_len, head_dim)
        # one buffer per layer (not views of one tensor), so a compiled step can take them as
        # separate, non-aliasing inputs and write them in place
        self.k_layers = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v_layers = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
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

    def prepare(self, valid: torch.Tensor, windows: set[int | None]) -> dict[int | None, Any]:
        """Reserve the step's slots; the boolean mask [B, 1, T, S] of every window size."""
        start = self.length
        key_valid = self.reserve(valid)  # [B, S]
        return {w: attention_mask(key_valid, start, w) for w in windows}

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any, attend_fn: AttendFn
    ) -> torch.Tensor:
        k_all, v_all = self.update(layer, k, v)
        return attend_fn(q, k_all, v_all, mask)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's k, v [B, n_kv_heads, T, head_dim] of `layer`; all keys/values so far (views)."""
        k_all, v_all = self.k_layers[layer], self.v_layers[layer]
        k_all[:, :, self.start : self.length] = k
        v_all[:, :, self.start : self.length] = v
        return k_all[:, :, : self.length], v_all[:, :, : self.length]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` [B] in that order (beam search); rows may repeat."""
        n = self.length
        for buf in (*self.k_layers, *self.v_layers):
            buf[:, :, :n] = buf[rows, :, :n]
        self.key_valid[:, :n] = self.key_valid[rows, :n]

    def nbytes(self) -> int:
        """Bytes held by the buffers (for memory reports)."""
        return sum(buf.nbytes for buf in (*self.k_layers, *self.v_layers)) + self.key_valid.nbytes
