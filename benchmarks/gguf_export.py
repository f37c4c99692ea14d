"""Write a benchmark's GPT-2 / Llama safetensors checkpoint as a GGUF file for llama.cpp (F32, BF16 or Q8_0).

llama.cpp's own converter (convert_hf_to_gguf.py) insists on a recognised tokenizer, and the
benchmark's random-weight checkpoints have none, so this writes the same tensors with the
`gguf` package (llama.cpp's Python library): the converter's tensor names, its q/k row
permutation for Llama's rotary layout, GPT-2's Conv1D transposes, 1-D tensors in F32, and a
placeholder byte-level vocabulary of the right size (the benchmark feeds token ids directly).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import load_file

QUANT_TYPES = {
    "f32": gguf.GGMLQuantizationType.F32,
    "bf16": gguf.GGMLQuantizationType.BF16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
GPT2_TRANSPOSED = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved pairs (the converter's LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _vocab(n: int) -> list[str]:
    """n distinct tokens, the 256 byte-level symbols of GPT-2 first (so llama.cpp can tokenize anything)."""
    byte_chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    byte_chars += [chr(c) for c in range(ord("¡"), ord("¬") + 1)] + [chr(c) for c in range(ord("®"), ord("ÿ") + 1)]
    byte_chars += [chr(256 + i) for i in range(256 - len(byte_chars))]
    return byte_chars[:n] + [f"<tok{i}>" for i in range(len(byte_chars), n)]


def _header(writer: gguf.GGUFWriter, cfg: dict, llama: bool, outtype: str) -> None:
    if llama:
        heads = cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
        writer.add_context_length(cfg["max_position_embeddings"])
        writer.add_embedding_length(cfg["hidden_size"])
        writer.add_block_count(cfg["num_hidden_layers"])
        writer.add_feed_forward_length(cfg["intermediate_size"])
        writer.add_head_count(heads)
        writer.add_head_count_kv(cfg.get("num_key_value_heads") or heads)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
        writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    else:
        writer.add_context_length(cfg["n_positions"])
        writer.add_embedding_length(cfg["n_embd"])
        writer.add_block_count(cfg["n_layer"])
        writer.add_feed_forward_length(cfg.get("n_inner") or 4 * cfg["n_embd"])
        writer.add_head_count(cfg["n_head"])
        writer.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    writer.add_file_type(FILE_TYPES[outtype])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(_vocab(cfg["vocab_size"]))
    writer.add_token_types([gguf.TokenType.NORMAL] * cfg["vocab_size"])
    writer.add_token_merges(["Ġ Ġ"])
    writer.add_bos_token_id(int(cfg.get("bos_token_id") or 0))
    writer.add_eos_token_id(int(cfg.get("eos_token_id") or 0))


def export_gguf(checkpoint: Path, out: Path, outtype: str) -> int:
    """Write `checkpoint` (model_type gpt2 or llama, one safetensors file) to `out`; bytes one decode step reads."""
    cfg = json.loads((checkpoint / "config.json").read_text())
    llama = cfg["model_type"] == "llama"
    arch = gguf.MODEL_ARCH.LLAMA if llama else gguf.MODEL_ARCH.GPT2
    n_layers = cfg["num_hidden_layers"] if llama else cfg["n_layer"]
    names = gguf.get_tensor_name_map(arch, n_layers)
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[arch])
    _header(writer, cfg, llama, outtype)
    tensors = load_file(checkpoint / "model.safetensors")
    step_bytes, embedding_bytes, has_output = 0, 0, False
    for hf_name, tensor in tensors.items():
        if hf_name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        w = tensor.to(torch.float32).numpy()
        if not llama and hf_name.endswith(GPT2_TRANSPOSED):
            w = np.ascontiguousarray(w.T)
        if llama and hf_name.endswith("q_proj.weight"):
            w = _permute(w, cfg["num_attention_heads"])
        if llama and hf_name.endswith("k_proj.weight"):
            w = _permute(w, cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"no GGUF name for {hf_name}")
        qtype = QUANT_TYPES[outtype] if w.ndim == 2 and name != "position_embd.weight" else QUANT_TYPES["f32"]
        data = gguf.quants.quantize(w, qtype) if qtype != gguf.GGMLQuantizationType.F32 else w
        writer.add_tensor(name, data, raw_dtype=qtype)
        if name == "token_embd.weight":
            embedding_bytes = data.nbytes
            if not llama:  # GPT-2 ties its head to the embedding; llama.cpp wants an explicit output tensor
                writer.add_tensor("output.weight", data, raw_dtype=qtype)
                step_bytes += data.nbytes
        elif name != "position_embd.weight":
            step_bytes += data.nbytes
        has_output |= name == "output.weight"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return step_bytes + (0 if has_output or not llama else embedding_bytes)  # tied Llama reads token_embd as head
