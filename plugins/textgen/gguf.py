"""Load GGUF checkpoints (llama.cpp's single-file format) into the native decoder: config, weights, tokenizer.

The `gguf` package (llama.cpp's own Python library) reads the file and dequantizes its blocks;
its TensorNameMap (the table llama.cpp's converter writes names with) maps tensors back to
Hugging Face names, which checkpoint.py already maps onto the native model. The tokenizer
is rebuilt from the `tokenizer.ggml.*` keys by transformers' GGUF tokenizer conversion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskhub.errors import ModelNotAvailableError

from .checkpoint import build_transformer, llama_names, transformer_config
from .model import Transformer
from .quantize import quantize_int8

# GGUF general.architecture -> Hugging Face model_type the native decoder maps
ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "phi3": "phi3", "gemma2": "gemma2", "gemma3": "gemma3_text"}
GEMMA_SWA_PATTERN = {"gemma2": 2, "gemma3": 6}  # every n-th layer is global (llama.cpp's fixed patterns)
GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}  # llama.cpp scales queries by 1/sqrt(dim / heads) on these only


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ModelNotAvailableError(
            "Loading .gguf files needs the gguf package: pip install 'taskhub[gguf]'."
        ) from None
    return gguf


def read_metadata(reader: Any) -> dict[str, Any]:
    """Every key/value of the file as plain Python values (arrays as lists)."""
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def _rope_parameters(meta: dict[str, Any], arch: str, head_dim: int) -> dict[str, Any]:
    """HF rope_parameters from llama.cpp's rope.* keys (linear and YaRN scaling; partial rotary)."""
    key = f"{arch}.rope."
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": float(meta.get(key + "freq_base", 10000.0))}
    rotary = meta.get(key + "dimension_count", head_dim)
    if rotary != head_dim:
        params["partial_rotary_factor"] = rotary / head_dim
    scaling = meta.get(key + "scaling.type", "none")
    if scaling == "linear":
        params.update(rope_type="linear", factor=float(meta[key + "scaling.factor"]))
    elif scaling == "yarn":
        params.update(rope_type="yarn", factor=float(meta[key + "scaling.factor"]))
        params["original_max_position_embeddings"] = int(meta[key + "scaling.original_context_length"])
    elif scaling not in ("none", "longrope"):  # longrope: the factor tensors describe it (_frequency_factors)
        raise ModelNotAvailableError(
            f"GGUF rope scaling {scaling!r} is not supported (supported: none, linear, yarn, longrope)."
        )
    return params


def _frequency_factors(
    params: dict[str, Any], meta: dict[str, Any], arch: str, factors: dict[str, list[float]], context: int
) -> dict[str, Any]:
    """RoPE whose frequencies llama.cpp stores as per-frequency divisors (inv_freq = base_inv_freq / factor).

    Phi-3 LongRoPE files hold `rope_factors_short` / `rope_factors_long`: transformers' longrope
    parameters exactly. Llama 3.1+ files hold `rope_freqs`, the llama3 ramp already evaluated:
    the same formula with one table, written as a longrope whose two tables are equal, whose
    switch point is the whole context (so the table never changes) and whose cos/sin scale is 1.
    """
    if "rope_factors_long.weight" in factors:
        original = int(meta[f"{arch}.rope.scaling.original_context_length"])
        long, short = factors["rope_factors_long.weight"], factors["rope_factors_short.weight"]
        scale = meta.get(f"{arch}.rope.scaling.attn_factor")
    else:
        original, long = context, factors["rope_freqs.weight"]
        short, scale = long, 1.0
    params.update(rope_type="longrope", long_factor=long, short_factor=short, original_max_position_embeddings=original)
    if scale is not None:
        params["attention_factor"] = float(scale)
    return params


def hf_config(
    meta: dict[str, Any], tensor_names: set[str], rope_factors: dict[str, list[float]] | None = None
) -> dict[str, Any]:
    """The Hugging Face config.json a GGUF file's metadata describes (what convert_hf_to_gguf.py read)."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelNotAvailableError(
            f"GGUF architecture {arch!r} is not covered by the native decoder (supported: {', '.join(ARCHITECTURES)})."
        )

    def key(name: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{name}", default)
        if value is None:
            raise ModelNotAvailableError(f"GGUF metadata lacks {arch}.{name}.")
        return value

    n_heads, hidden, n_layers = key("attention.head_count"), key("embedding_length"), key("block_count")
    head_dim = key("attention.key_length", hidden // n_heads)
    rope = _rope_parameters(meta, arch, head_dim)
    if rope_factors:
        rope = _frequency_factors(rope, meta, arch, rope_factors, key("context_length"))
    config: dict[str, Any] = {
        "model_type": ARCHITECTURES[arch],
        "vocab_size": len(meta["tokenizer.ggml.tokens"]),
        "hidden_size": hidden,
        "intermediate_size": key("feed_forward_length"),
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": key("attention.head_count_kv", n_heads),
        "head_dim": head_dim,
        "max_position_embeddings": key("context_length"),
        "rms_norm_eps": key("attention.layer_norm_rms_epsilon"),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "rope_parameters": rope,
        "sliding_window": meta.get(f"{arch}.attention.sliding_window"),
    }
    if rope["rope_type"] == "longrope":  # Phi-3's top-level key wins over rope_parameters in transformer_config
        config["original_max_position_embeddings"] = rope["original_max_position_embeddings"]
    for name in ("bos", "eos", "padding"):
        if f"tokenizer.ggml.{name}_token_id" in meta:
            config[f"{'pad' if name == 'padding' else name}_token_id"] = meta[f"tokenizer.ggml.{name}_token_id"]
    if arch in GEMMA_SWA_PATTERN:
        pattern = meta.get(f"{arch}.attention.sliding_window_pattern", GEMMA_SWA_PATTERN[arch])
        if isinstance(pattern, list):  # one flag per layer: True = sliding window
            config["layer_types"] = ["sliding_attention" if s else "full_attention" for s in pattern]
        else:
            config["sliding_window_pattern"] = pattern
        big = n_layers == GEMMA_27B_LAYERS[arch]
        config["query_pre_attn_scalar"] = hidden // n_heads if big else head_dim
        config["attn_logit_softcapping"] = meta.get(f"{arch}.attn_logit_softcapping")
        config["final_logit_softcapping"] = meta.get(f"{arch}.final_logit_softcapping")
    if arch == "gemma3":
        local = {"rope_type": "default", "rope_theta": float(key("rope.freq_base_swa", 10000.0))}
        config["rope_parameters"] = {"full_attention": config["rope_parameters"], "sliding_attention": local}
    return config


ROPE_FACTOR_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


def rope_factors(reader: Any) -> dict[str, list[float]]:
    """The per-frequency RoPE divisors a file stores as tensors (Llama 3.1+, Phi-3 LongRoPE), by tensor name."""
    return {t.name: [float(x) for x in t.data] for t in reader.tensors if t.name in ROPE_FACTOR_TENSORS}


def _unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo convert_hf_to_gguf.py's q/k row permutation for Llama (GGML's interleaved RoPE -> rotate_half)."""
    rows = weights.shape[0]
    return weights.reshape(n_head, rows // n_head // 2, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _file_dtype(tensors: list[Any], gguf: Any) -> torch.dtype | str:
    """The dtype a file's own weights load in: F32 and F16 -> float32 (no fast fp16 CPU matmul), BF16 -> bfloat16,
    Q8_0 -> "int8" (the int8 weight-only path), any other quantization -> float32 (dequantized)."""
    types = [t.tensor_type for t in tensors if len(t.shape) == 2]
    main = max(set(types), key=types.count)
    if main == gguf.GGMLQuantizationType.BF16:
        return torch.bfloat16
    if main == gguf.GGMLQuantizationType.Q8_0:
        return "int8"
    return torch.float32


def load_gguf_transformer(path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu") -> Transformer:
    """The native model from a .gguf file; dtype None = the file's own (see _file_dtype), else dequantized to dtype."""
    gguf = _gguf()
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    hf = hf_config(read_metadata(reader), set(tensors), rope_factors(reader))
    cfg = transformer_config(hf)
    arch = reader.fields["general.architecture"].contents()
    target = dtype or _file_dtype(list(tensors.values()), gguf)
    load_dtype = torch.float32 if target == "int8" else target
    names = gguf.get_tensor_name_map(next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch), cfg.n_layers)

    def read(hf_name: str) -> torch.Tensor:
        suffixes = (".weight", ".bias")  # HF names: decoder tensors under "model.", the output head bare
        gguf_name = names.get_name("model." + hf_name, try_suffixes=suffixes) or names.get_name(hf_name, suffixes)
        if gguf_name not in tensors:
            raise ModelNotAvailableError(f"GGUF file {path} lacks tensor {gguf_name!r} ({hf_name}).")
        t = tensors[gguf_name]
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            data = _unpermute(data, cfg.n_heads if "q_proj" in hf_name else cfg.n_kv_heads)
        if arch in GEMMA_SWA_PATTERN and hf_name.endswith("norm.weight"):
            data = data - 1.0  # llama.cpp stores Gemma's norm scale 1 + w; the native norm adds the 1
        return torch.from_numpy(np.array(data, dtype=np.float32)).to(load_dtype)  # a copy: the file is mapped read-only

    entries = list(llama_names(cfg, hf["model_type"]))
    if not cfg.tie_embeddings:
        entries.append(("output.weight", ["lm_head.weight"], False))
    state = {native: torch.cat([read(n) for n in hf_names]) for native, hf_names, _ in entries}
    model = build_transformer(cfg, state, device)
    return quantize_int8(model) if target == "int8" else model


def read_gguf_config(path: str | Path) -> dict[str, Any]:
    """The Hugging Face config dict of a .gguf file (its metadata only; tensors are not read)."""
    reader = _gguf().GGUFReader(str(path))
    return hf_config(read_metadata(reader), {t.name for t in reader.tensors}, rope_factors(reader))


def load_gguf_tokenizer(path: str | Path) -> Any:
    """The tokenizer the file's tokenizer.ggml.* keys describe (transformers' GGUF conversion, offline)."""
    from transformers import AutoTokenizer

    path = Path(path)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
