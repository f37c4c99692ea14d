"""Tiny GGUF files written from tiny Hugging Face checkpoints the way llama.cpp's convert_hf_to_gguf.py does.

Tensor names come from gguf's TensorNameMap (the converter's own table), Llama's q/k rows get
the converter's permutation, Gemma's norms are stored as 1 + w, and the tokenizer is written
as `tokenizer.ggml.*` keys (a byte-level BPE: model "gpt2", tokens, types, merges).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import load_file

ARCHS = {"llama": "llama", "qwen2": "qwen2", "gemma2": "gemma2", "gemma3_text": "gemma3", "phi3": "phi3"}
QTYPES = {
    "F32": gguf.GGMLQuantizationType.F32,
    "F16": gguf.GGMLQuantizationType.F16,
    "BF16": gguf.GGMLQuantizationType.BF16,
    "Q8_0": gguf.GGMLQuantizationType.Q8_0,
}
FILE_TYPES = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16}
FILE_TYPES |= {"BF16": gguf.LlamaFileType.MOSTLY_BF16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}


def permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate_half pairs -> interleaved pairs (GGML's RoPE layout)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tokenizer(writer: gguf.GGUFWriter, hf_dir: Path, config: dict) -> None:
    data = json.loads((hf_dir / "tokenizer.json").read_text())
    vocab: dict[str, int] = data["model"]["vocab"]
    added = {t["id"]: t for t in data["added_tokens"]}
    size = max(config["vocab_size"], len(vocab))
    tokens, types = [], []
    by_id = {i: t for t, i in vocab.items()}
    for i in range(size):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        if config.get(f"{key}_token_id") is not None:
            add(config[f"{key}_token_id"])
    writer.add_add_bos_token(False)
    template = hf_dir / "chat_template.jinja"
    if template.is_file():
        writer.add_chat_template(template.read_text())


def _hparams(writer: gguf.GGUFWriter, config: dict, model_type: str) -> None:
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config["vocab_size"])
    rope = config.get("rope_parameters") or {}
    if model_type == "gemma3_text":
        full = rope["full_attention"]
        writer.add_rope_freq_base(full["rope_theta"])
        writer.add_rope_freq_base_swa(rope["sliding_attention"]["rope_theta"])
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in config["layer_types"]])
        if full.get("rope_type") == "linear":
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(full["factor"])
    else:
        writer.add_rope_freq_base(rope.get("rope_theta", 10000.0))
    writer.add_rope_dimension_count(int(head_dim * rope.get("partial_rotary_factor", 1.0)))
    if config.get("sliding_window") is not None and model_type != "llama":
        writer.add_sliding_window(config["sliding_window"])
    if model_type in ("gemma2", "gemma3_text"):
        if config.get("attn_logit_softcapping") is not None:
            writer.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        if config.get("final_logit_softcapping") is not None:
            writer.add_final_logit_softcapping(config["final_logit_softcapping"])


def _rope_factor_tensors(writer: gguf.GGUFWriter, config: dict, head_dim: int) -> None:
    """convert_hf_to_gguf.py's extra RoPE tensors: Llama 3.1's evaluated ramp, Phi-3's LongRoPE factors."""
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type") == "llama3":
        base, dim = rope["rope_theta"], head_dim
        freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
        factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old_len = rope["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low, old_len / high
        factors = []
        for freq in freqs:
            wavelen = 2 * math.pi / freq
            if wavelen < high_wavelen:
                factors.append(1.0)
            elif wavelen > low_wavelen:
                factors.append(factor)
            else:
                smooth = (old_len / wavelen - low) / (high - low)
                factors.append(1 / ((1 - smooth) / factor + smooth))
        writer.add_tensor("rope_freqs.weight", np.array(factors, dtype=np.float32))
    if rope.get("rope_type") == "longrope":
        original = config["original_max_position_embeddings"]
        scale = config["max_position_embeddings"] / original
        writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)))
        writer.add_rope_scaling_orig_ctx_len(original)
        writer.add_tensor("rope_factors_long.weight", np.array(rope["long_factor"], dtype=np.float32))
        writer.add_tensor("rope_factors_short.weight", np.array(rope["short_factor"], dtype=np.float32))


def write_gguf(hf_dir: Path, out: Path, qtype: str = "F32") -> Path:
    """Convert the checkpoint at hf_dir into one GGUF file with 2-D weights stored as `qtype` (norms stay F32)."""
    config = json.loads((hf_dir / "config.json").read_text())
    model_type = config["model_type"]
    arch = ARCHS[model_type]
    writer = gguf.GGUFWriter(out, arch)
    writer.add_name(hf_dir.name)
    writer.add_file_type(FILE_TYPES[qtype])
    _hparams(writer, config, model_type)
    _tokenizer(writer, hf_dir, config)
    model_arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch)
    names = gguf.get_tensor_name_map(model_arch, config["num_hidden_layers"])
    _rope_factor_tensors(
        writer, config, config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    )
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    for hf_name, tensor in load_file(hf_dir / "model.safetensors").items():
        data = tensor.to(torch.float32).numpy()
        if arch == "llama" and hf_name.endswith("q_proj.weight"):
            data = permute(data, n_head)
        if arch == "llama" and hf_name.endswith("k_proj.weight"):
            data = permute(data, n_kv)
        if arch.startswith("gemma") and hf_name.endswith("norm.weight"):
            data = data + 1.0  # llama.cpp's Gemma norms multiply by w, transformers' by 1 + w
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        if data.ndim == 1 or qtype == "F32":
            writer.add_tensor(name, data.astype(np.float32))
        elif qtype == "F16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, QTYPES[qtype]), raw_dtype=QTYPES[qtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
