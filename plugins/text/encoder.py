"""A BERT encoder for inference: the math of transformers' BertModel with fused CPU linear kernels.

On CPU, oneDNN's linear (bias, GELU and the residual add fused into the matmul) runs BERT-sized matmuls
about twice as fast as the default addmm path, which copies the bias into the output before every
matmul. Query, key and value are one matmul. Weights are taken from a loaded transformers BertModel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EncoderConfig:
    hidden_size: int  # width of every token vector (H)
    num_heads: int  # attention heads; head size is H // num_heads
    layer_norm_eps: float  # epsilon of every LayerNorm


def fused_linear_available(device: torch.device, dtype: torch.dtype) -> bool:
    """oneDNN linear kernels exist for CPU fp32/bf16 in builds with mkldnn (a private op: checked, not assumed)."""
    return (
        device.type == "cpu"
        and dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class Linear(nn.Module):
    """y = act(x @ W.T + b) (+ residual), one fused kernel on CPU; `act` is "none" or "gelu" (erf GELU)."""

    def __init__(self, source: nn.Linear, act: str = "none") -> None:
        super().__init__()
        self.weight = source.weight  # [out, in]
        self.bias = source.bias  # [out]
        self.act = act
        self.fused = fused_linear_available(self.weight.device, self.weight.dtype)

    @classmethod
    def stacked(cls, parts: list[nn.Linear]) -> Linear:
        """One linear computing several (query, key, value) side by side: out = concat of theirs."""
        joined = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts), device=parts[0].weight.device)
        joined.weight = nn.Parameter(torch.cat([p.weight for p in parts]), requires_grad=False)
        joined.bias = nn.Parameter(torch.cat([p.bias for p in parts]), requires_grad=False)
        return cls(joined)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.fused and residual is not None and self.act == "none":
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")
        if self.fused:
            y = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.act, [], "none")
        else:
            y = F.linear(x, self.weight, self.bias)
            y = F.gelu(y) if self.act == "gelu" else y
        return y if residual is None else y + residual


class Layer(nn.Module):
    """Post-LayerNorm transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, layer: nn.Module, config: EncoderConfig) -> None:
        super().__init__()
        attention = layer.attention
        self.config = config
        self.qkv = Linear.stacked([attention.self.query, attention.self.key, attention.self.value])
        self.attn_out = Linear(attention.output.dense)
        self.attn_norm = attention.output.LayerNorm
        self.ffn_in = Linear(layer.intermediate.dense, act="gelu")
        self.ffn_out = Linear(layer.output.dense)
        self.ffn_norm = layer.output.LayerNorm

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        heads = self.config.num_heads
        qkv = self.qkv(x).view(B, T, 3, heads, H // heads).permute(2, 0, 3, 1, 4)  # [3, B, heads, T, d]
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)  # [B, heads, T, d]
        attended = attended.transpose(1, 2).reshape(B, T, H)
        eps = self.config.layer_norm_eps
        x = F.layer_norm(self.attn_out(attended, residual=x), (H,), self.attn_norm.weight, self.attn_norm.bias, eps)
        x = F.layer_norm(self.ffn_out(self.ffn_in(x), residual=x), (H,), self.ffn_norm.weight, self.ffn_norm.bias, eps)
        return x


class BertEncoder(nn.Module):
    """Last hidden states of a BertModel, [B, T, H], for right-padded batches."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        config = bert.config
        self.config = EncoderConfig(config.hidden_size, config.num_attention_heads, config.layer_norm_eps)
        self.embeddings = bert.embeddings
        self.layers = nn.ModuleList(Layer(layer, self.config) for layer in bert.encoder.layer)

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Plain BERT encoders (absolute positions, erf GELU, no decoder parts) and nothing else."""
        config = model.config
        return (
            config.model_type == "bert"
            and config.hidden_act == "gelu"
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not config.is_decoder
            and hasattr(model, "embeddings")
            and hasattr(model, "encoder")
        )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # [B, T, H]
        # a batch without padding needs no mask (and gets the faster unmasked attention kernel)
        mask = None if bool(attention_mask.all()) else attention_mask[:, None, None, :].bool()  # [B, 1, 1, T]
        for layer in self.layers:
            x = layer(x, mask)
        return x
