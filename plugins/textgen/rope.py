"""Rotary position embeddings: inverse frequencies of every rope_scaling variant, cos/sin tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")


@dataclass(frozen=True)
class RopeConfig:
    """RoPE as a Hugging Face config describes it (`rope_parameters` / `rope_theta` + `rope_scaling`)."""

    rope_type: str = "default"  # one of ROPE_TYPES
    theta: float = 10000.0  # base wavelength
    head_dim: int = 64  # rotated dimensions per head (the first ones; fewer than the head's with partial rotary)
    max_position_embeddings: int = 2048  # context length the frequencies are tuned for (dynamic, yarn)
    scaling: dict[str, Any] = field(default_factory=dict)  # variant parameters: factor, low_freq_factor, ...


def _base_inv_freq(theta: float | torch.Tensor, dim: int) -> torch.Tensor:
    """The original RoPE frequencies 1 / theta^(2i/dim), [dim/2] fp32."""
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim
    return 1.0 / (theta**exponents)


def _llama3(cfg: RopeConfig) -> torch.Tensor:
    """Llama 3.1: long wavelengths divided by `factor`, a smooth ramp between the two bands."""
    s = cfg.scaling
    inv_freq = _base_inv_freq(cfg.theta, cfg.head_dim)
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def _yarn(cfg: RopeConfig) -> tuple[torch.Tensor, float]:
    """YaRN: interpolate low frequencies, extrapolate high ones, scale attention by mscale."""
    s, dim, base = cfg.scaling, cfg.head_dim, cfg.theta
    original_len = s["original_max_position_embeddings"]
    factor = s.get("factor") or cfg.max_position_embeddings / original_len

    def get_mscale(scale: float, mscale: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = s.get("mscale"), s.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast, beta_slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original_len / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, device="cpu").float() / dim)
    extrapolation_factor = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_factor) + (1.0 / pos_freqs) * extrapolation_factor
    return inv_freq, attention_factor


def longrope(cfg: RopeConfig, long: bool) -> tuple[torch.Tensor, float]:
    """Phi-3 LongRoPE: per-frequency divisors (`long_factor` past the original context, else `short_factor`)."""
    s, dim = cfg.scaling, cfg.head_dim
    original_len = s["original_max_position_embeddings"]
    factor = s.get("factor") or cfg.max_position_embeddings / original_len
    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original_len))
    ext_factors = torch.tensor(s["long_factor" if long else "short_factor"], dtype=torch.float32, device="cpu")
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim
    return 1.0 / (ext_factors * cfg.theta**exponents), attention_factor


def rope_frequencies(cfg: RopeConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [head_dim/2] fp32 and the cos/sin scale, as transformers computes them at load time."""
    if cfg.rope_type in ("default", "dynamic"):  # dynamic starts from the default table
        return _base_inv_freq(cfg.theta, cfg.head_dim), 1.0
    if cfg.rope_type == "linear":
        return _base_inv_freq(cfg.theta, cfg.head_dim) / cfg.scaling["factor"], 1.0
    if cfg.rope_type == "llama3":
        return _llama3(cfg), 1.0
    if cfg.rope_type == "yarn":
        return _yarn(cfg)
    if cfg.rope_type == "longrope":
        return longrope(cfg, long=False)
    raise ValueError(f"unsupported rope_type {cfg.rope_type!r}; supported: {', '.join(ROPE_TYPES)}")


def dynamic_ntk_inv_freq(cfg: RopeConfig, seq_len: int) -> torch.Tensor:
    """Dynamic NTK frequencies for a sequence past max_position_embeddings (fp32 tensor math, as transformers)."""
    factor, max_len, dim = cfg.scaling["factor"], cfg.max_position_embeddings, cfg.head_dim
    seq = torch.tensor(seq_len, dtype=torch.int64)
    base = cfg.theta * ((factor * seq / max_len) - (factor - 1)) ** (dim / (dim - 2))
    return _base_inv_freq(base, dim)


class RotaryEmbedding(nn.Module):
    """cos/sin for given positions; rotation is `x * cos + roll(x, half) * signed_sin` (rotate_half layout)."""

    def __init__(self, cfg: RopeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        inv_freq, self.attention_scaling = rope_frequencies(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        if cfg.rope_type == "longrope":
            self.register_buffer("long_inv_freq", longrope(cfg, long=True)[0], persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, T] -> cos, signed sin [B, T, 1, head_dim] in `dtype` (the 1 broadcasts over heads)."""
        inv_freq = self.inv_freq
        if self.cfg.rope_type == "dynamic":
            seq_len = int(positions.max()) + 1  # transformers uses the longest row of the batch
            if seq_len > self.cfg.max_position_embeddings:
                inv_freq = dynamic_ntk_inv_freq(self.cfg, seq_len).to(inv_freq.device)
        elif self.cfg.rope_type == "longrope":  # the longest row of the batch picks the table, as transformers
            if int(positions.max()) + 1 > self.cfg.scaling["original_max_position_embeddings"]:
                inv_freq = self.long_inv_freq
        freqs = positions[..., None].float() * inv_freq  # [B, T, head_dim/2]
        cos, sin = freqs.cos(), freqs.sin()
        if self.attention_scaling != 1.0:
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        cos = torch.cat((cos, cos), dim=-1).to(dtype)
        sin = torch.cat((-sin, sin), dim=-1).to(dtype)  # sign of rotate_half folded in
        return cos.unsqueeze(2), sin.unsqueeze(2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, heads, head_dim]; equals transformers' `x * cos + rotate_half(x) * sin` bit for bit.

    With partial rotary (cos narrower than the head) only the first cos.shape[-1] dims turn.
    """
    rot = cos.shape[-1]
    if rot < x.shape[-1]:
        return torch.cat([apply_rotary(x[..., :rot], cos, sin), x[..., rot:]], dim=-1)
    return torch.addcmul(x * cos, torch.roll(x, rot // 2, dims=-1), sin)  # x * cos + roll(x) * sin in 3 kernels
