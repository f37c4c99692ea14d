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

LLAMA_FAMILY = ("llama", "mistral", "qwen2", "phi3")
GEMMA_FAMILY = ("gemma2", "gemma3_text")
MULTIMODAL_TEXT = {"gemma3": "gemma3_text"}  # image-text checkpoints whose language model runs alone on text
SUPPORTED_MODEL_TYPES = ("gpt2", *LLAMA_FAMILY, *GEMMA_FAMILY, *MULTIMODAL_TEXT)
# where each family's decoder tensors live in the checkpoint (HF names below are relative to these)
_PREFIXES = {"gpt2": ("transformer.",), "gemma3": ("language_model.model.", "model.language_model.", "language_model.")}

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
    "phi3": {
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "max_position_embeddings": 4096,
        "original_max_position_embeddings": 4096,
        "sliding_window": None,
    },
    "gemma2": {
        "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": True,
        "head_dim": 256,
        "num_key_value_heads": 4,
        "max_position_embeddings": 8192,
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": 50.0,
        "attention_bias": False,
        "sliding_window_pattern": 2,
    },
    "gemma3_text": {
        "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": True,
        "head_dim": 256,
        "num_key_value_heads": 4,
        "max_position_embeddings": 131072,
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
        "final_logit_softcapping": None,
        "attention_bias": False,
        "sliding_window_pattern": 6,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
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


def _rope_config(hf: dict[str, Any], head_dim: int, max_pos: int, params: dict[str, Any] | None = None) -> RopeConfig:
    """RoPE from `rope_parameters` (transformers v5) or `rope_theta` + `rope_scaling` (older configs).

    `params` overrides where the parameters live (Gemma 3 nests one dict per layer type).
    """
    if params is None:
        params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    params = dict(params)
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    if hf.get("model_type") == "phi3" and rope_type in ("su", "yarn"):  # Phi-3's legacy names of LongRoPE
        rope_type = "longrope"
    if rope_type not in ROPE_TYPES:
        raise _unsupported(f"rope type {rope_type!r} (supported: {', '.join(ROPE_TYPES)})")
    rotary_dim = int(head_dim * params.pop("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)))
    if rope_type == "longrope" and not ("short_factor" in params and "long_factor" in params):
        raise _unsupported("longrope without short_factor and long_factor")
    if rope_type in ("llama3", "yarn", "longrope"):
        if "original_max_position_embeddings" in hf:  # transformers gives the top-level key priority
            params["original_max_position_embeddings"] = hf["original_max_position_embeddings"]
        params.setdefault("original_max_position_embeddings", max_pos)
    return RopeConfig(rope_type, float(theta), rotary_dim, max_pos, params)


def _layer_types(hf: dict[str, Any], n_layers: int) -> list[str]:
    """Gemma's per-layer attention kinds: config.json's layer_types, else every `pattern`-th layer global."""
    pattern = hf["sliding_window_pattern"]
    default = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
    return hf.get("layer_types") or default


def _sliding_windows(hf: dict[str, Any], model_type: str, n_layers: int) -> tuple[int | None, ...]:
    """Per-layer window: Mistral windows every layer; Qwen2 the layers its layer_types mark sliding."""
    if model_type in ("mistral", "phi3") and hf["sliding_window"] is not None:
        return (hf["sliding_window"],) * n_layers
    if model_type in GEMMA_FAMILY:
        window = hf["sliding_window"]
        if window is None:
            raise _unsupported("a Gemma config with sliding_window null")
        return tuple(window if t == "sliding_attention" else None for t in _layer_types(hf, n_layers))
    if model_type == "qwen2":
        window = hf["sliding_window"] if hf["use_sliding_window"] else None
        types = hf.get("layer_types") or [
            "sliding_attention" if window is not None and i >= hf["max_window_layers"] else "full_attention"
            for i in range(n_layers)
        ]
        if window is not None and "sliding_attention" in types:
            return tuple(window if t == "sliding_attention" else None for t in types)
    return ()


def _gemma_config(hf: dict[str, Any], model_type: str) -> TransformerConfig:
    """Gemma 2 and Gemma 3 (text): Llama's shape plus sandwich norms, (1 + w) RMSNorm, sqrt(dim) embeddings,
    query_pre_attn_scalar, soft-capping (Gemma 2), QK-norm and a separate local RoPE base (Gemma 3)."""
    if hf.get("use_bidirectional_attention"):
        raise _unsupported("bidirectional attention (an encoder, not a decoder)")
    head_dim, max_pos, n_layers = hf["head_dim"], hf["max_position_embeddings"], hf["num_hidden_layers"]
    gemma3 = model_type == "gemma3_text"
    local_rope = None
    if gemma3:
        nested = hf.get("rope_parameters") or {}
        if "full_attention" in nested:
            global_params, local_params = nested["full_attention"], nested.get("sliding_attention")
        else:  # older configs: rope_theta (+ rope_scaling) for global layers, rope_local_base_freq for local ones
            global_params = {**(hf.get("rope_scaling") or {}), "rope_theta": hf["rope_theta"]}
            local_params = None
        local_params = local_params or {"rope_type": "default", "rope_theta": hf["rope_local_base_freq"]}
        rope = _rope_config(hf, head_dim, max_pos, global_params)
        local_rope = _rope_config(hf, head_dim, max_pos, local_params)
    else:
        rope = _rope_config(hf, head_dim, max_pos)
    return TransformerConfig(
        vocab_size=hf["vocab_size"],
        dim=hf["hidden_size"],
        n_layers=n_layers,
        n_heads=hf["num_attention_heads"],
        n_kv_heads=hf["num_key_value_heads"],
        head_dim=head_dim,
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=max_pos,
        norm="gemma_rmsnorm",
        norm_eps=hf["rms_norm_eps"],
        activation=_activation(hf["hidden_activation"]),
        gated_mlp=True,
        rope=rope,
        qkv_bias=hf["attention_bias"],
        out_bias=hf["attention_bias"],
        tie_embeddings=hf["tie_word_embeddings"],
        attn_scale=float(hf["query_pre_attn_scalar"]) ** -0.5,
        sliding_windows=_sliding_windows(hf, model_type, n_layers),
        local_rope=local_rope,
        sandwich_norms=True,
        qk_norm=gemma3,
        embed_scale=hf["hidden_size"] ** 0.5,
        attn_softcap=None if gemma3 else hf["attn_logit_softcapping"],  # transformers' Gemma 3 never caps scores
        final_softcap=hf["final_logit_softcapping"],
    )


def transformer_config(hf: dict[str, Any]) -> TransformerConfig:
    """Map a Hugging Face config dict to TransformerConfig; ModelNotAvailableError when not covered."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise _unsupported(f"model_type {model_type!r} (supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    if model_type in MULTIMODAL_TEXT:  # the text decoder of an image-text checkpoint: its text_config
        if not isinstance(hf.get("text_config"), dict):
            raise _unsupported(f"a {model_type} config without text_config")
        # transformers' Gemma3ForConditionalGeneration never soft-caps its logits, whatever text_config says
        text = {**hf["text_config"], "model_type": MULTIMODAL_TEXT[model_type], "final_logit_softcapping": None}
        return transformer_config(text)
    hf = {**_DEFAULTS[model_type], **hf}
    try:
        if model_type in GEMMA_FAMILY:
            return _gemma_config(hf, model_type)
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


# native norm -> HF norm of each layer; Gemma's post_attention_layernorm is a sandwich norm, Llama's the MLP's
_LLAMA_NORMS = {"attention_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm"}
_GEMMA_NORMS = {
    "attention_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "mlp_norm": "pre_feedforward_layernorm",
    "post_mlp_norm": "post_feedforward_layernorm",
}


def llama_names(cfg: TransformerConfig, model_type: str) -> Iterator[tuple[str, list[str], bool]]:
    """(native name, HF names to concatenate, transpose) for every Llama-family, Phi-3 and Gemma tensor.

    Phi-3 stores q, k, v as one qkv_proj and gate, up as one gate_up_proj: the native layout already.
    """
    fused = model_type == "phi3"
    norms = _GEMMA_NORMS if model_type in GEMMA_FAMILY else _LLAMA_NORMS
    yield "tok_embeddings.weight", ["embed_tokens.weight"], False
    for i in range(cfg.n_layers):
        n, h = f"layers.{i}.", f"layers.{i}."
        attn, mlp = h + "self_attn.", h + "mlp."
        for native, hf_norm in norms.items():
            yield n + native + ".weight", [h + hf_norm + ".weight"], False
        if cfg.qk_norm:
            yield n + "attention.q_norm.weight", [attn + "q_norm.weight"], False
            yield n + "attention.k_norm.weight", [attn + "k_norm.weight"], False
        qkv = [attn + "qkv_proj"] if fused else [attn + p + "_proj" for p in "qkv"]
        yield n + "attention.wqkv.weight", [name + ".weight" for name in qkv], False
        if cfg.qkv_bias:
            yield n + "attention.wqkv.bias", [name + ".bias" for name in qkv], False
        yield n + "attention.wo.weight", [attn + "o_proj.weight"], False
        if cfg.out_bias:
            yield n + "attention.wo.bias", [attn + "o_proj.bias"], False
        gate_up = [mlp + "gate_up_proj"] if fused else [mlp + "gate_proj", mlp + "up_proj"]
        for suffix in ("weight", "bias") if cfg.mlp_bias else ("weight",):
            yield n + f"mlp.w_up.{suffix}", [f"{name}.{suffix}" for name in gate_up], False
            yield n + f"mlp.w_down.{suffix}", [mlp + f"down_proj.{suffix}"], False
    yield "norm.weight", ["norm.weight"], False


def _resolver(files: dict[str, Path], prefixes: tuple[str, ...]) -> Callable[[str], str | None]:
    """HF name without prefix -> the stored name (checkpoints differ in whether they keep the prefix)."""

    def resolve(name: str) -> str | None:
        for candidate in (*(p + name for p in prefixes), name):
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
    resolve = _resolver(files, _PREFIXES.get(hf["model_type"], ("model.",)))
    model_type = MULTIMODAL_TEXT.get(hf["model_type"], hf["model_type"])
    names = list(_gpt2_names(cfg) if is_gpt2 else llama_names(cfg, model_type))
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
    return build_transformer(cfg, state, device)


def build_transformer(cfg: TransformerConfig, state: dict[str, torch.Tensor], device: str = "cpu") -> Transformer:
    """The native model holding `state` (native tensor names; the output head may be left out when tied)."""
    if cfg.tie_embeddings:
        state["output.weight"] = state["tok_embeddings.weight"]
    with torch.device("meta"):
        model = Transformer(cfg)
    model.load_state_dict(state, assign=True, strict=True)
    model.tie_weights()
    return model.to(device).eval()
