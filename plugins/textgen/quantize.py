"""Weight-only quantization of the native model's linear layers: int8 per output channel, int4 per group."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taskhub.cpu_kernels import int8_linear
from taskhub.errors import ParamError

from .model import Linear, Transformer

INT4_GROUP = 32  # weights sharing one scale and zero point (llama.cpp's q4_0 block size)


class Int8Linear(nn.Module):
    """y = x @ (int8 weight * per-row scale).T + bias, with x in bf16, on the kernel taskhub.cpu_kernels.int8_linear
    takes for this row count (taskhub's skinny kernel at decode rows, a bf16 GEMM on dequantized weights for prompts)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # [out]
        self.register_buffer("weight", torch.round(w / scales[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).to(torch.bfloat16)  # [tokens, in]
        y = int8_linear(rows.shape[0])(rows, self.weight, self.scales).view(*shape[:-1], -1)  # [..., out]
        return y if self.bias is None else y + self.bias


def int4_groups(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit codes of weight [out, in] per `group` inputs: codes [out, in] in 0..15, scale and min [out, in/group].

    The weight is approximated by codes * scale + min (what `_weight_int4pack_mm_for_cpu` computes).
    """
    out_features, in_features = weight.shape
    grouped = weight.float().view(out_features, in_features // group, group)  # [out, groups, group]
    low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-12)
    codes = torch.round((grouped - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    return codes.view(out_features, in_features), scale, low


class Int4Linear(nn.Module):
    """y = x @ dequant(int4 weight).T + bias, groups of INT4_GROUP inputs, x in bf16 (torch's int4 weight-pack kernel)."""

    def __init__(self, linear: nn.Linear, group: int = INT4_GROUP) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.group, self.out_features = group, weight.shape[0]
        padded = -self.out_features % 16  # the packing wants a multiple of 16 outputs: zero rows, sliced off
        codes, scale, low = int4_groups(F.pad(weight, (0, 0, 0, padded)), group)
        self.register_buffer("weight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))  # packed uint8
        # the kernel computes (code - 8) * scale + zero, so zero = min + 8 * scale; [in/group, out, 2]
        scales_and_zeros = torch.stack([scale, low + 8 * scale], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(torch.bfloat16)  # [tokens, in]
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.weight, self.group, self.scales_and_zeros)
        y = y[:, : self.out_features].view(*shape[:-1], self.out_features)  # [..., out]
        return y if self.bias is None else y + self.bias


def _int4_or_int8(linear: nn.Linear) -> nn.Module:
    """Int4Linear, or Int8Linear for a layer whose input size is not a multiple of the group size."""
    return Int4Linear(linear) if linear.in_features % INT4_GROUP == 0 else Int8Linear(linear)


QUANTIZERS = {"int8": Int8Linear, "int4": _int4_or_int8}


def quantize(model: Transformer, scheme: str) -> Transformer:
    """Every Linear (output head included) quantized weight-only by `scheme` ("int8" or "int4"); the rest to bf16.

    Weights are quantized from the values as loaded; activations run in bf16.
    """
    if scheme not in QUANTIZERS:
        raise ParamError(f"Unknown quantization {scheme!r}; expected one of: {', '.join(QUANTIZERS)}")
    make = QUANTIZERS[scheme]
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Linear):
                setattr(parent, name, make(child))
    return model.to(torch.bfloat16)  # int8 / packed int4 buffers keep their dtype


def quantize_int8(model: Transformer) -> Transformer:
    """quantize(model, "int8")."""
    return quantize(model, "int8")
