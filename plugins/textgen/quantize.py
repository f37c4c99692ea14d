"""Weight-only int8 quantization of the native model's linear layers (per output channel, symmetric)."""

from __future__ import annotations

import torch
from torch import nn

from .model import Linear, Transformer


class Int8Linear(nn.Module):
    """y = x @ (int8 weight * per-row scale).T + bias, with x in bf16 (torch's int8 weight-pack kernel)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # [out]
        self.register_buffer("weight", torch.round(w / scales[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.weight, self.scales)
        y = y.view(*shape[:-1], -1)  # [..., out]
        return y if self.bias is None else y + self.bias


def quantize_int8(model: Transformer) -> Transformer:
    """Every Linear (output head included) to Int8Linear, quantized from the weights as loaded; the rest to bf16."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Linear):
                setattr(parent, name, Int8Linear(child))
    return model.to(torch.bfloat16)  # int8 buffers keep their dtype
