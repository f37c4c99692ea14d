"""Load Hugging Face decoder checkpoints (config.json + safetensors) into the native Transformer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from taskhub.errors import ModelNotAvailableError

from .model import Transformer, TransformerConfig
from .rope import ROPE_TYPES, RopeConfig

LLAMA_FAMILY = ("llama", "mistral", "qwen2")
SUPPORTED_MODEL_TYPES = ("gpt2", *LLAMA_FAMILY)

# transformers' config defaults for the optional keys a config.json may leave out
_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt2": {
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "n_inner": None,
        "tie_word_embeddings": True,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
    },
    "llama": {
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "max_position_embeddings": 2048,
    },
    "mistral": {
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "sliding_window": 4096,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
    },
    "qwen2": {
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": 4096,
        "max_window_layers": 28,
        "max_position_embeddings": 32768,
    },
}
_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _unsupported(why: str) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"The native decoder cannot run this checkpoint: {why}. Load it through transformers instead."
    )


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The checkpoint's config.json as a dict."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise ModelNotAvailableError(f"{file} not found: a model directory needs config.json.")
    return json.loads(file.read_text())


def _activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise _unsupported(f"activation {name!r} (supported: {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


def _rope_config(hf: dict[str, Any], head_dim: int, max_pos: int) -> RopeConfig:
    """RoPE from `rope_parameters` (transformers v5) or `rope_theta` + `rope_scaling` (older configs)."""
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    if rope_type not in ROPE_TYPES:
        raise _unsupported(f"rope type {rope_type!r} (supported: {', '.join(ROPE_TYPES)})")
    if params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise _unsupported("partial rotary embeddings")
    if rope_type in ("llama3", "yarn"):
        if "original_max_position_embeddings" in hf:  # transformers gives the top-level key priority
            params["original_max_position_embeddings"] = hf["original_max_position_embeddings"]
        params.setdefault("original_max_position_embeddings", max_pos)
    return RopeConfig(rope_type, float(theta), head_dim, max_pos, params)


def _sliding_windows(hf: dict[str, Any], model_type: str, n_layers: int) -> tuple[int | None, ...]:
    """Per-layer window: Mistral windows every layer; Qwen2 the layers its layer_types mark sliding."""
    if model_type == "mistral" and hf["sliding_window"] is not None:
        return (hf["sliding_window"],) * n_layers
    if model_type == "qwen2":
        window = hf["sliding_window"] if hf["use_sliding_window"] else None
        types = hf.get("layer_types") or [
            "sliding_attention" if window is not None and i >= hf["max_window_layers"] else "full_attention"
            for i in range(n_layers)
        ]
        if window is not None and "sliding_attention" in types:
            return tuple(window if t == "sliding_attention" else None for t in types)
    return ()


def transformer_config(hf: dict[str, Any]) -> TransformerConfig:
    """Map a Hugging Face config dict to TransformerConfig; ModelNotAvailableError when not covered."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise _unsupported(f"model_type {model_type!r} (supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    hf = {**_DEFAULTS[model_type], **hf}
    try:
        if model_type == "gpt2":
            dim, n_heads = hf["n_embd"], hf["n_head"]
            return TransformerConfig(
                vocab_size=hf["vocab_size"],
                dim=dim,
                n_layers=hf["n_layer"],
                n_heads=n_heads,
                n_kv_heads=n_heads,
                head_dim=dim // n_heads,
                intermediate_size=hf["n_inner"] or 4 * dim,
                max_position_embeddings=hf["n_positions"],
                norm="layernorm",
                norm_eps=hf["layer_norm_epsilon"],
                activation=_activation(hf["activation_function"]),
                gated_mlp=False,
                learned_positions=True,
                qkv_bias=True,
                out_bias=True,
                mlp_bias=True,
                tie_embeddings=hf["tie_word_embeddings"],
                attn_scale=None if hf["scale_attn_weights"] else 1.0,
                scale_attn_by_inverse_layer_idx=hf["scale_attn_by_inverse_layer_idx"],
            )
        n_heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // n_heads
        max_pos = hf["max_position_embeddings"]
        attention_bias = model_type == "qwen2" or hf.get("attention_bias", False)
        return TransformerConfig(
            vocab_size=hf["vocab_size"],
            dim=hf["hidden_size"],
            n_layers=hf["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            head_dim=head_dim,
            intermediate_size=hf["intermediate_size"],
            max_position_embeddings=max_pos,
            norm="rmsnorm",
            norm_eps=hf["rms_norm_eps"],
            activation=_activation(hf["hidden_act"]),
            gated_mlp=True,
            rope=_rope_config(hf, head_dim, max_pos),
            qkv_bias=attention_bias,
            out_bias=model_type == "llama" and attention_bias,
            mlp_bias=hf.get("mlp_bias", False),
            tie_embeddings=hf["tie_word_embeddings"],
            sliding_windows=_sliding_windows(hf, model_type, hf["num_hidden_layers"]),
        )
    except KeyError as e:
        raise ModelNotAvailableError(f"config.json of a {model_type} model lacks {e.args[0]!r}.") from None


def _weight_files(path: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, from model.safetensors or a sharded index."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: path / file for name, file in weight_map.items()}
    single = path / "model.safetensors"
    if not single.is_file():
        raise _unsupported(f"no model.safetensors or model.safetensors.index.json in {path}")
    with safe_open(single, framework="pt") as f:
        return {name: single for name in f.keys()}


def _gpt2_names(cfg: TransformerConfig) -> Iterator[tuple[str, list[str], bool]]:
    """(native name, HF names to concatenate, transpose Conv1D) for every GPT-2 tensor."""
    yield "tok_embeddings.weight", ["wte.weight"], False
    yield "pos_embeddings.weight", ["wpe.weight"], False
    for i in range(cfg.n_layers):
        n, h = f"layers.{i}.", f"h.{i}."
        for native, hf_name, conv in (
            ("attention_norm", "ln_1", False),
            ("attention.wqkv", "attn.c_attn", True),
            ("attention.wo", "attn.c_proj", True),
            ("mlp_norm", "ln_2", False),
            ("mlp.w_up", "mlp.c_fc", True),
            ("mlp.w_down", "mlp.c_proj", True),
        ):
            yield n + native + ".weight", [h + hf_name + ".weight"], conv
            yield n + native + ".bias", [h + hf_name + ".bias"], False
    yield "norm.weight", ["ln_f.weight"], False
    yield "norm.bias", ["ln_f.bias"], False


def _llama_names(cfg: TransformerConfig) -> Iterator[tuple[str, list[str], bool]]:
    """(native name, HF names to concatenate, transpose) for every Llama-family tensor."""
    yield "tok_embeddings.weight", ["embed_tokens.weight"], False
    for i in range(cfg.n_layers):
        n, h = f"layers.{i}.", f"layers.{i}."
        attn, mlp = h + "self_attn.", h + "mlp."
        yield n + "attention_norm.weight", [h + "input_layernorm.weight"], False
        yield n + "mlp_norm.weight", [h + "post_attention_layernorm.weight"], False
        yield n + "attention.wqkv.weight", [attn + p + "_proj.weight" for p in "qkv"], False
        if cfg.qkv_bias:
            yield n + "attention.wqkv.bias", [attn + p + "_proj.bias" for p in "qkv"], False
        yield n + "attention.wo.weight", [attn + "o_proj.weight"], False
        if cfg.out_bias:
            yield n + "attention.wo.bias", [attn + "o_proj.bias"], False
        for suffix in ("weight", "bias") if cfg.mlp_bias else ("weight",):
            yield n + f"mlp.w_up.{suffix}", [mlp + f"gate_proj.{suffix}", mlp + f"up_proj.{suffix}"], False
            yield n + f"mlp.w_down.{suffix}", [mlp + f"down_proj.{suffix}"], False
    yield "norm.weight", ["norm.weight"], False


def _resolver(files: dict[str, Path], prefix: str) -> Callable[[str], str | None]:
    """HF name without prefix -> the stored name (checkpoints differ in whether they keep the prefix)."""

    def resolve(name: str) -> str | None:
        for candidate in (prefix + name, name):
            if candidate in files:
                return candidate
        return None

    return resolve


def load_transformer(path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu") -> Transformer:
    """Build the native model from a checkpoint directory; dtype None = the checkpoint's own (transformers' "auto")."""
    path = Path(path)
    hf = read_hf_config(path)
    cfg = transformer_config(hf)
    if dtype is None:
        dtype = _DTYPES.get(hf.get("dtype") or hf.get("torch_dtype") or "float32", torch.float32)
    files = _weight_files(path)
    is_gpt2 = hf["model_type"] == "gpt2"
    resolve = _resolver(files, "transformer." if is_gpt2 else "model.")
    names = list(_gpt2_names(cfg) if is_gpt2 else _llama_names(cfg))
    if not cfg.tie_embeddings:
        names.append(("output.weight", ["lm_head.weight"], False))
    state: dict[str, torch.Tensor] = {}
    with ExitStack() as stack:
        handles: dict[Path, Any] = {}

        def read(hf_name: str) -> torch.Tensor:
            stored = resolve(hf_name)
            if stored is None:
                raise ModelNotAvailableError(f"Checkpoint {path} lacks tensor {hf_name!r}.")
            file = files[stored]
            if file not in handles:
                handles[file] = stack.enter_context(safe_open(file, framework="pt"))
            return handles[file].get_tensor(stored).to(dtype)

        for native, hf_names, transpose in names:
            tensor = torch.cat([read(n) for n in hf_names]) if len(hf_names) > 1 else read(hf_names[0])
            state[native] = tensor.t().contiguous() if transpose else tensor
    if cfg.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(state, assign=True, strict=True)
    model.tie_weights()
    return model.to(device).eval()
