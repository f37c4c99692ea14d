"""The native decoder-only transformer: GPT-2, Llama-family, Gemma 2/3 and Phi-3 blocks in one readable module."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from taskhub.cpu_kernels import cpu_linear

from .kv_cache import Cache, KVCache
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
    norm: str = "rmsnorm"  # "rmsnorm" (Llama), "gemma_rmsnorm" (scale by 1 + weight) or "layernorm" (GPT-2)
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
    local_rope: RopeConfig | None = None  # Gemma 3: RoPE of the sliding-window layers (others use `rope`)
    sandwich_norms: bool = False  # Gemma 2/3: also norm the attention and MLP outputs before each residual add
    qk_norm: bool = False  # Gemma 3: norm every query and key head (over head_dim) before RoPE
    embed_scale: float | None = None  # Gemma: token embeddings times this (sqrt(dim)), rounded to the weights' dtype
    attn_softcap: float | None = None  # Gemma 2: attention scores -> cap * tanh(scores / cap) before masking
    final_softcap: float | None = None  # Gemma 2/3: the same on the output logits

    def window(self, layer: int) -> int | None:
        """Sliding-window size of `layer` (keys older than this many slots are masked), None = full attention."""
        return self.sliding_windows[layer] if self.sliding_windows else None

    def layer_scale(self, layer: int) -> float:
        scale = self.head_dim**-0.5 if self.attn_scale is None else self.attn_scale
        return scale / (layer + 1) if self.scale_attn_by_inverse_layer_idx else scale


class Linear(nn.Linear):
    """nn.Linear whose fp32/bf16 CPU matmuls run on taskhub's skinny kernel at decode rows, else on the faster
    of MKL and oneDNN for this CPU (taskhub.cpu_kernels.cpu_linear; under torch.compile: F.linear there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cpu and x.dtype in (torch.float32, torch.bfloat16):
            return cpu_linear(x.dtype, x.numel() // x.shape[-1])(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    """Llama RMSNorm: normalise in fp32, cast back, then scale (transformers' order of roundings)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:  # no casts: one fused kernel
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)


class GemmaRMSNorm(RMSNorm):
    """Gemma RMSNorm: the stored weight is centred on 0, the scale is (1 + weight), applied in fp32 before the cast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype)


def make_norm(cfg: TransformerConfig, dim: int | None = None) -> nn.Module:
    """The config's norm over `dim` features (default: the hidden size)."""
    dim = cfg.dim if dim is None else dim
    if cfg.norm == "layernorm":
        return nn.LayerNorm(dim, eps=cfg.norm_eps)
    if cfg.norm == "gemma_rmsnorm":
        return GemmaRMSNorm(dim, cfg.norm_eps)
    return RMSNorm(dim, cfg.norm_eps)


def soft_cap(x: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(x / cap): squashes x smoothly into (-cap, cap) (Gemma 2's attention and logit capping)."""
    return torch.tanh(x / cap) * cap


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float, softcap: float | None = None
) -> torch.Tensor:
    """Attention math of every cache layout: q [B, h, T, hd] over k, v [B, kvh, S, hd]; mask [B, 1, T, S] -> [B, h, T, hd].

    The static cache and the engine's paged cache both call this, so a family's attention
    variant is written once. SDPA cannot soft-cap scores, so with `softcap` the scores are
    computed explicitly (transformers' eager order: scale, cap, mask, fp32 softmax).
    A boolean mask is True where a key is visible; a float mask is added to the scores.
    """
    if softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    if q.shape[1] != k.shape[1]:  # grouped-query heads: each kv head serves h / kvh query heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = soft_cap(q @ k.transpose(-1, -2) * scale, softcap)  # [B, h, T, S]
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype) @ v


class Attention(nn.Module):
    """Causal self-attention with fused qkv, RoPE or not, grouped-query heads, and a KV cache."""

    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.scale = cfg.layer_scale(layer)
        self.softcap = cfg.attn_softcap
        self.q_norm = make_norm(cfg, cfg.head_dim) if cfg.qk_norm else None
        self.k_norm = make_norm(cfg, cfg.head_dim) if cfg.qk_norm else None
        qkv_out = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
        self.wqkv = Linear(cfg.dim, qkv_out, bias=cfg.qkv_bias)
        self.wo = Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=cfg.out_bias)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: Any,
        cache: Cache,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        h, kvh = self.n_heads, self.n_kv_heads
        qkv = self.wqkv(x).view(B, T, h + 2 * kvh, self.head_dim)  # [B, T, heads_q + heads_k + heads_v, hd]
        qk = qkv[:, :, : h + kvh]  # [B, T, heads_q + heads_k, hd]
        if self.q_norm is not None and self.k_norm is not None:
            qk = torch.cat([self.q_norm(qk[:, :, :h]), self.k_norm(qk[:, :, h:])], dim=2)
        if rope is not None:
            qk = apply_rotary(qk, *rope)  # q and k heads rotated in one pass
        q, k = qk[:, :, :h], qk[:, :, h:]
        v = qkv[:, :, h + kvh :]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, hd]
        y = cache.attend(self.layer, q, k, v, mask, self.attend)  # [B, heads, T, hd]
        y = y.transpose(1, 2).reshape(B, T, h * self.head_dim)  # [B, T, heads * hd]
        return self.wo(y)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """This layer's attention math over keys/values that a cache layout gathered."""
        return attend(q, k, v, mask, self.scale, self.softcap)


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
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)).

    With sandwich norms (Gemma 2/3) each branch output is normed again before the add.
    """

    def __init__(self, cfg: TransformerConfig, layer: int) -> None:
        super().__init__()
        self.attention_norm = make_norm(cfg)
        self.attention = Attention(cfg, layer)
        self.post_attention_norm = make_norm(cfg) if cfg.sandwich_norms else nn.Identity()
        self.mlp_norm = make_norm(cfg)
        self.mlp = MLP(cfg)
        self.post_mlp_norm = make_norm(cfg) if cfg.sandwich_norms else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        mask: Any,
        cache: Cache,
    ) -> torch.Tensor:
        x = x + self.post_attention_norm(self.attention(self.attention_norm(x), rope, mask, cache))
        return x.add_(self.post_mlp_norm(self.mlp(self.mlp_norm(x))))  # x is this block's own tensor


class Transformer(nn.Module):
    """Decoder-only language model; every forward reads and extends a cache (static KVCache or the engine's paged one)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.dim) if cfg.learned_positions else None
        self.rotary = RotaryEmbedding(cfg.rope) if cfg.rope is not None else None
        self.local_rotary = RotaryEmbedding(cfg.local_rope) if cfg.local_rope is not None else None
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
        cache: Cache,
        all_logits: bool = False,
        logits_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run tokens idx [B, T] at positions [B, T] (valid [B, T]: False = padding) after what `cache` holds.

        Returns logits [B, T, V] with all_logits, [B, len(logits_at), V] of the slots `logits_at`,
        else [B, 1, V] of the last slot only.
        """
        masks = cache.prepare(valid, set(self.cfg.sliding_windows or (None,)))  # window -> the cache's mask
        x = self.tok_embeddings(idx)  # [B, T, dim]
        if self.cfg.embed_scale is not None:
            x = x * torch.tensor(self.cfg.embed_scale, dtype=x.dtype)  # rounded to the dtype first, as transformers
        if self.pos_embeddings is not None:
            x = x + self.pos_embeddings(positions)
        rope = self.rotary(positions, x.dtype) if self.rotary is not None else None
        local_rope = self.local_rotary(positions, x.dtype) if self.local_rotary is not None else rope
        for i, layer in enumerate(self.layers):
            window = self.cfg.window(i)
            x = layer(x, rope if window is None else local_rope, masks[window], cache)
        if logits_at is not None:
            x = x[:, logits_at]
        elif not all_logits:
            x = x[:, -1:]
        logits = self.output(self.norm(x))
        return logits if self.cfg.final_softcap is None else soft_cap(logits, self.cfg.final_softcap)
