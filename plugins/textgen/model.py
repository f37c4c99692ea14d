"""The native decoder-only transformer: GPT-2 and Llama-family blocks in one readable module."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import cpu_linear
from .kv_cache import KVCache
from .rope import RopeConfig, RotaryEmbedding, apply_rotary

ACTIVATIONS = {
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's gelu_new
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
}


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and flavour of a decoder-only transformer; built from a Hugging Face config by checkpoint.py."""

    vocab_size: int  # rows of the token embedding and of the output head
    dim: int  # hidden size
    n_layers: int  # transformer blocks
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads (< n_heads: grouped-query attention)
    head_dim: int  # size of one head
    intermediate_size: int  # hidden size of the MLP
    max_position_embeddings: int  # longest sequence the positions support
    norm: str = "rmsnorm"  # "rmsnorm" (Llama) or "layernorm" (GPT-2, with bias)
    norm_eps: float = 1e-6  # epsilon of every norm
    activation: str = "silu"  # key of ACTIVATIONS
    gated_mlp: bool = True  # SwiGLU: down(act(gate(x)) * up(x)); False: fc2(act(fc1(x)))
    learned_positions: bool = False  # GPT-2 position embedding table instead of RoPE
    rope: RopeConfig | None = None  # rotary embedding, when not learned_positions
    qkv_bias: bool = False  # bias on the q, k, v projections (GPT-2, Qwen2)
    out_bias: bool = False  # bias on the attention output projection (GPT-2)
    mlp_bias: bool = False  # bias on the MLP projections (GPT-2)
    tie_embeddings: bool = False  # output head shares the token embedding matrix
    attn_scale: float | None = None  # multiplier of q.k; None: head_dim ** -0.5
    scale_attn_by_inverse_layer_idx: bool = False  # GPT-2 option: layer i divides the scale by i + 1
    sliding_windows: tuple[int | None, ...] = field(default_factory=tuple)  # per layer; () = no window anywhere

    def window(self, layer: int) -> int | None:
        """Sliding-window size of `layer` (keys older than this many slots are masked), None = full attention."""
        return self.sliding_windows[layer] if self.sliding_windows else None

    def layer_scale(self, layer: int) -> float:
        scale = self.head_dim**-0.5 if self.attn_scale is None else self.attn_scale
        return scale / (layer + 1) if self.scale_attn_by_inverse_layer_idx else scale


class Linear(nn.Linear):
    """nn.Linear whose fp32/bf16 CPU matmuls run on the faster of MKL and oneDNN for this CPU (kernels.py).

    Under torch.compile it stays F.linear: inductor picks its own kernels.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cpu and x.dtype in (torch.float32, torch.bfloat16) and not torch.compiler.is_compiling():
            return cpu_linear(x.dtype, x.numel() // x.shape[-1])(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    """Llama RMSNorm: normalise in fp32, cast back, then scale (transformers' order of roundings)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


def make_norm(cfg: TransformerConfig) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
    return RMSNorm(cfg.dim, cfg.norm_eps)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention math of every cache layout: q [B, h, T, hd] over k, v [B, kvh, S, hd]; mask [B, 1, T, S] -> [B, h, T, hd].

    The static cache and the engine's paged cache both call this, so a family's attention
    variant (soft-capping, ...) is written once.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


class Attention(nn.Module):
    """Causal self-attention with fused qkv, RoPE or not, grouped-query heads, and a KV cache."""

    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.scale = cfg.layer_scale(layer)
        qkv_out = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
        self.wqkv = Linear(cfg.dim, qkv_out, bias=cfg.qkv_bias)
        self.wo = Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=cfg.out_bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor,
        cache: KVCache,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        h, kvh = self.n_heads, self.n_kv_heads
        qkv = self.wqkv(x).view(B, T, h + 2 * kvh, self.head_dim)  # [B, T, heads_q + heads_k + heads_v, hd]
        if rope is not None:
            qk = apply_rotary(qkv[:, :, : h + kvh], *rope)  # q and k heads rotated in one pass
            q, k = qk[:, :, :h], qk[:, :, h:]
        else:
            q, k = qkv[:, :, :h], qkv[:, :, h : h + kvh]
        v = qkv[:, :, h + kvh :]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, hd]
        k, v = cache.update(self.layer, k, v)  # [B, kv_heads, S, hd], S = slots filled so far
        y = attend(q, k, v, mask, self.scale)
        y = y.transpose(1, 2).reshape(B, T, h * self.head_dim)  # [B, T, heads * hd]
        return self.wo(y)


class MLP(nn.Module):
    """SwiGLU (gate and up fused into one matmul) or GPT-2's two-layer MLP."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.gated = cfg.gated_mlp
        self.act = ACTIVATIONS[cfg.activation]
        n_up = 2 * cfg.intermediate_size if cfg.gated_mlp else cfg.intermediate_size
        self.w_up = Linear(cfg.dim, n_up, bias=cfg.mlp_bias)  # gated: rows [gate; up]
        self.w_down = Linear(cfg.intermediate_size, cfg.dim, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.w_up(x)
        if self.gated:
            gate, up = up.chunk(2, dim=-1)
            return self.w_down(self.act(gate) * up)
        return self.w_down(self.act(up))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.attention_norm = make_norm(cfg)
        self.attention = Attention(cfg, layer)
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor,
        cache: KVCache,
    ) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rope, mask, cache)
        return x + self.mlp(self.mlp_norm(x))


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


class Transformer(nn.Module):
    """Decoder-only language model; every forward reads and extends a KVCache."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.dim) if cfg.learned_positions else None
        self.rotary = RotaryEmbedding(cfg.rope) if cfg.rope is not None else None
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = make_norm(cfg)
        self.output = Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the embedding matrix with the output head when the config ties them."""
        if self.cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty cache for `batch` rows of up to `max_len` tokens, in the model's dtype and device."""
        p = self.tok_embeddings.weight
        c = self.cfg
        return KVCache(c.n_layers, batch, c.n_kv_heads, max_len, c.head_dim, p.dtype, p.device)

    def forward(
        self,
        idx: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
        cache: KVCache,
        all_logits: bool = False,
    ) -> torch.Tensor:
        """Run tokens idx [B, T] at positions [B, T] (valid [B, T]: False = padding) after what `cache` holds.

        Returns logits [B, T, V] with all_logits, else [B, 1, V] of the last slot only.
        """
        start = cache.length
        key_valid = cache.reserve(valid)  # [B, S]
        masks = {w: attention_mask(key_valid, start, w) for w in set(self.cfg.sliding_windows or (None,))}
        x = self.tok_embeddings(idx)  # [B, T, dim]
        if self.pos_embeddings is not None:
            x = x + self.pos_embeddings(positions)
        rope = self.rotary(positions, x.dtype) if self.rotary is not None else None
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, masks[self.cfg.window(i)], cache)
        if not all_logits:
            x = x[:, -1:]
        return self.output(self.norm(x))
