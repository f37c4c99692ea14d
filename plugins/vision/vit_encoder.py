"""A ViT for inference: the math of transformers' ViTModel / ViTForImageClassification on shared CPU linear kernels.

taskhub's `cpu_kernels.Linear` (the kernel measured fastest here: oneDNN with bias, GELU and the residual
add fused into the matmul where it wins; query, key and value as one matmul; dynamic int8 when asked) runs
the encoder's matmuls, which are nearly all of a ViT forward on CPU.
Patch embeddings, the pooler and the weights are taken from the loaded transformers model; anything
the fused path does not cover (position interpolation, other image sizes, masks) runs the original.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from taskhub_text.api import EncoderConfig
from torch import nn
from transformers import ViTForImageClassification, ViTModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
)
from transformers.utils import ModelOutput

from taskhub.cpu_kernels import GeluMlp, Linear, fused_linear_available
from taskhub.native import packed_attention, packed_attention_bf16x3_fits, packed_attention_fits


class Layer(nn.Module):
    """Pre-LayerNorm transformer layer: x = x + attn(LN(x)); x = x + mlp(LN(x))."""

    def __init__(
        self, layer: nn.Module, config: EncoderConfig, kernel: str | None, quantize: str | None, precision: str
    ) -> None:
        super().__init__()
        attention = layer.attention
        self.config = config
        self.attn_norm = layer.layernorm_before
        parts = [attention.q_proj, attention.k_proj, attention.v_proj]
        options = {"kernel": kernel, "quantize": quantize, "precision": precision}
        self.qkv = Linear.stacked(parts, **options)
        self.attn_out = Linear(attention.o_proj, **options)
        self.mlp_norm = layer.layernorm_after
        self.mlp = GeluMlp(Linear(layer.mlp.fc1, act="gelu", **options), Linear(layer.mlp.fc2, **options))
        head_dim, dtype = config.hidden_size // config.num_heads, self.attn_norm.weight.dtype
        self.packed_attention = packed_attention_fits(dtype, head_dim)
        # "high" precision lets attention's two matmuls run as bf16x3 on AMX too (scores and values ~1e-5 off)
        self.attention_bf16x3 = precision == "high" and packed_attention_bf16x3_fits(dtype, head_dim)

    def attend(self, h: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """[B, T, H] -> [B, T, H]: taskhub's native attention on the images' rows laid end to end (image b in
        rows starts[b] .. starts[b + 1] - 1), else SDPA."""
        B, T, H = h.shape
        heads = self.config.num_heads
        if self.packed_attention:
            qkv = self.qkv(h).view(B * T, 3 * H)
            return packed_attention(qkv, starts, heads, (H // heads) ** -0.5, self.attention_bf16x3).view(B, T, H)
        qkv = self.qkv(h).view(B, T, 3, heads, H // heads).permute(2, 0, 3, 1, 4)  # [3, B, heads, T, d]
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, heads, T, d]
        return attended.transpose(1, 2).reshape(B, T, H)

    def forward(self, x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        H, eps = x.shape[-1], self.config.layer_norm_eps
        h = F.layer_norm(x, (H,), self.attn_norm.weight, self.attn_norm.bias, eps)
        x = self.attn_out(self.attend(h, starts), residual=x)
        h = F.layer_norm(x, (H,), self.mlp_norm.weight, self.mlp_norm.bias, eps)
        return self.mlp(h, residual=x)


class ViTEncoder(nn.Module):
    """Drop-in for a ViTModel or ViTForImageClassification: same call, same ModelOutput type and values
    (within rounding: bf16 and int8 runs are checked against fp32 transformers, see tests).

    `kernel` forces one linear kernel (default: measured), `quantize="int8"` runs the linears in dynamic int8,
    `precision` is the fp32 matmul precision ("high": bf16x3 on AMX where faster; "highest").
    """

    def __init__(
        self, model: nn.Module, kernel: str | None = None, quantize: str | None = None, precision: str = "high"
    ) -> None:
        super().__init__()
        self.model = model  # the original: runs every call the fused path does not cover
        vit = model.vit if isinstance(model, ViTForImageClassification) else model
        config = model.config
        self.config = EncoderConfig(config.hidden_size, config.num_attention_heads, config.layer_norm_eps)
        self.embeddings = vit.embeddings
        self.layers = nn.ModuleList(Layer(layer, self.config, kernel, quantize, precision) for layer in vit.layers)
        self.norm = vit.layernorm
        self.pooler = getattr(vit, "pooler", None)  # ViTModel only
        self.classifier = getattr(model, "classifier", None)  # ViTForImageClassification only

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Plain float32 / bfloat16 ViTs (erf GELU, biased query/key/value), bare or with the classification head, on CPU."""
        config = model.config
        return (
            type(model) in (ViTModel, ViTForImageClassification)
            and config.hidden_act == "gelu"
            and config.qkv_bias
            and fused_linear_available(model.device, model.dtype)
        )

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> ModelOutput:
        if kwargs or tuple(pixel_values.shape[-2:]) != tuple(self.embeddings.image_size):
            return self.model(pixel_values, **kwargs)
        B = pixel_values.shape[0]
        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)  # as ViTModel does
        patches = self.embeddings.patch_embeddings(pixel_values)  # [B, patches, H]
        x = torch.cat((self.embeddings.cls_token.expand(B, -1, -1), patches), dim=1)  # [B, 1 + patches, H]
        x = x + self.embeddings.position_embeddings
        starts = torch.arange(0, B * x.shape[1] + 1, x.shape[1])  # [B + 1]: each image's first row, end to end
        for layer in self.layers:
            x = layer(x, starts)
        x = self.norm(x)
        if self.classifier is not None:
            return ImageClassifierOutput(logits=self.classifier(x[:, 0, :]))
        pooled = self.pooler(x) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled)
