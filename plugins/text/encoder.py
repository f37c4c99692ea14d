"""A BERT encoder for inference: the math of transformers' BertModel on taskhub's shared CPU linear kernels.

Each linear runs on the kernel `taskhub.cpu_kernels.Linear` measured fastest on this CPU (oneDNN with bias,
GELU and the residual add fused into the matmul and pre-packed weights won at MiniLM shapes on a Xeon with
AMX; see docs/performance.md), or dynamic int8 (smoothed, per token) when asked. Query, key and value are one matmul. Weights
are taken from a loaded transformers BertModel. The linears (nearly all the work) run on the real tokens
only, packed without padding; attention alone sees the padded grid, masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from taskhub.cpu_kernels import GeluMlp, Linear, smoothing_factors
from taskhub.native import packed_attention, packed_attention_bf16x3_fits, packed_attention_fits


@dataclass
class EncoderConfig:
    hidden_size: int  # width of every token vector (H)
    num_heads: int  # attention heads; head size is H // num_heads
    layer_norm_eps: float  # epsilon of every LayerNorm


class Packing:
    """Where a right-padded batch's real tokens sit in its [B, T] grid: pack to [N, C] and pad back."""

    def __init__(self, attention_mask: torch.Tensor) -> None:
        self.shape = tuple(attention_mask.shape)  # (B, T)
        padded = not bool(attention_mask.all())
        # a batch without padding needs no mask (and gets the faster unmasked attention kernel)
        self.mask = attention_mask[:, None, None, :].bool() if padded else None  # [B, 1, 1, T]
        self.index = attention_mask.flatten().nonzero().squeeze(1) if padded else None  # [N] positions in B * T
        # [B + 1]: sequence b's tokens are packed rows starts[b] .. starts[b + 1] - 1 (row-major order)
        self.starts = F.pad(attention_mask.sum(1).cumsum(0), (1, 0))

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [N, C], the real tokens in order."""
        flat = padded.reshape(-1, padded.shape[-1])  # [B * T, C]
        return flat if self.index is None else flat.index_select(0, self.index)

    def pad(self, packed: torch.Tensor) -> torch.Tensor:
        """[N, C] -> [B, T, C], zeros at padding."""
        if self.index is not None:
            packed = packed.new_zeros(self.shape[0] * self.shape[1], packed.shape[-1]).index_copy_(
                0, self.index, packed
            )
        return packed.view(*self.shape, packed.shape[-1])


class Layer(nn.Module):
    """Post-LayerNorm transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x)).

    With `input_maxima` (int8) every linear but the FFN output runs in int8, smoothed per input channel
    from those maxima; the FFN output stays float: int8 there alone cost MiniLM up to 0.004 of cosine
    per layer (its input, the GELU output, has a few huge tokens and its weights a few huge entries)."""

    def __init__(
        self,
        layer: nn.Module,
        config: EncoderConfig,
        kernel: str | None,
        input_maxima: dict[nn.Linear, torch.Tensor] | None = None,
        precision: str = "high",
    ) -> None:
        super().__init__()
        attention = layer.attention
        self.config = config

        def quantized(*parts: nn.Linear, act: str = "none") -> Linear:
            quantize, smooth = None, None
            if input_maxima is not None:  # the parts share their input, so its maxima are the first part's
                quantize = "int8"
                smooth = smoothing_factors(input_maxima[parts[0]], torch.cat([p.weight for p in parts]))
            if len(parts) > 1:
                return Linear.stacked(list(parts), act, kernel, quantize, smooth, precision)
            return Linear(parts[0], act, kernel, quantize, smooth, precision)

        self.qkv = quantized(attention.self.query, attention.self.key, attention.self.value)
        self.attn_out = quantized(attention.output.dense)
        self.attn_norm = attention.output.LayerNorm
        ffn_out = Linear(layer.output.dense, kernel=kernel, precision=precision)
        self.ffn = GeluMlp(quantized(layer.intermediate.dense, act="gelu"), ffn_out)
        self.ffn_norm = layer.output.LayerNorm
        head_dim, dtype = config.hidden_size // config.num_heads, self.attn_norm.weight.dtype
        self.packed_attention = packed_attention_fits(dtype, head_dim)
        # "high" precision lets attention's two matmuls run as bf16x3 on AMX too (scores and values ~1e-5 off)
        self.attention_bf16x3 = precision == "high" and packed_attention_bf16x3_fits(dtype, head_dim)

    def attend(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        """[N, H] -> [N, H]: each sequence's tokens attend to each other. Packed in place where taskhub's
        native kernel runs; else SDPA on the padded grid, masked."""
        (B, T), H = packing.shape, x.shape[-1]
        heads = self.config.num_heads
        if self.packed_attention:
            return packed_attention(self.qkv(x), packing.starts, heads, (H // heads) ** -0.5, self.attention_bf16x3)
        qkv = packing.pad(self.qkv(x)).view(B, T, 3, heads, H // heads).permute(2, 0, 3, 1, 4)  # [3, B, heads, T, d]
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=packing.mask)  # [B, heads, T, d]
        return packing.pack(attended.transpose(1, 2).reshape(B, T, H))

    def forward(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        """x: [N, H], the batch's real tokens packed."""
        H = x.shape[-1]
        attended = self.attend(x, packing)
        eps = self.config.layer_norm_eps
        x = F.layer_norm(self.attn_out(attended, residual=x), (H,), self.attn_norm.weight, self.attn_norm.bias, eps)
        x = F.layer_norm(self.ffn(x, residual=x), (H,), self.ffn_norm.weight, self.ffn_norm.bias, eps)
        return x


class BertEncoder(nn.Module):
    """Last hidden states of a BertModel, [B, T, H], for right-padded batches (zeros at padding).

    `kernel` forces one linear kernel (one of cpu_kernels.KERNELS; default: measured), `precision` is the
    fp32 matmul precision ("high" lets fp32 linears run as bf16x3 on AMX where that is faster; "highest").
    `input_maxima` (each of bert's nn.Linear -> its largest |input| per channel on calibration text, see
    calibration.py) runs the layers' linears in dynamic int8, smoothed with them (see `Layer`).
    """

    def __init__(
        self,
        bert: nn.Module,
        kernel: str | None = None,
        input_maxima: dict[nn.Linear, torch.Tensor] | None = None,
        precision: str = "high",
    ) -> None:
        super().__init__()
        config = bert.config
        self.config = EncoderConfig(config.hidden_size, config.num_attention_heads, config.layer_norm_eps)
        self.embeddings = bert.embeddings
        self.layers = nn.ModuleList(
            Layer(layer, self.config, kernel, input_maxima, precision) for layer in bert.encoder.layer
        )

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
        packing = Packing(attention_mask)
        x = packing.pack(self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids))  # [N, H]
        for layer in self.layers:
            x = layer(x, packing)
        return packing.pad(x)  # [B, T, H], zeros at padding
