"""The native decoder against transformers: logits, KV-cache decoding, greedy generation, loading."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from fixtures_decoding import EOS, PAD
from fixtures_textgen import textgen_checkpoints  # noqa: F401  (session fixture)
from safetensors.torch import load_file, save_file
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.checkpoint import load_transformer, read_hf_config, transformer_config
from taskhub_textgen.compiled import CompiledDecodeStep
from taskhub_textgen.loading import load_generative_lm
from taskhub_textgen.model import Transformer
from taskhub_textgen.native_backend import NativeBackend, is_supported, positions_from_mask
from taskhub_textgen.quantize import Int4Linear, Int8Linear, quantize_int8
from transformers import AutoModelForCausalLM

from taskhub.errors import ModelNotAvailableError
from taskhub.models import ModelSource

FP32_KINDS = [
    "gpt2",
    "llama",
    "llama_tied",
    "llama_linear",
    "llama_dynamic",
    "llama3",
    "llama_yarn",
    "mistral",
    "qwen2",
    "llama_sharded",
]
NEW_TOKENS = 64


def left_padded(lengths: list[int], seed: int = 0, vocab: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts of the given lengths, left-padded: ids [B, T], mask [B, T]."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.full((len(lengths), T), PAD)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, T - n :] = torch.randint(4, vocab, (n,), generator=g)
        mask[row, T - n :] = 1
    return ids, mask


def hf_model(path: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


def full_logits(model: Transformer, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Native logits at every position [B, T, V] from one forward pass."""
    with torch.no_grad():
        cache = model.new_cache(ids.shape[0], ids.shape[1])
        return model(ids, positions_from_mask(mask), mask.bool(), cache, all_logits=True)


def native_and_transformers_greedy(path: Path, compile_mode: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """NEW_TOKENS greedy tokens of three left-padded prompts (7, 3, 16 tokens): the native decoder's, transformers'.

    `compile_mode`: run the native decode steps compiled (compiled.py).
    """
    ids, mask = left_padded([7, 3, 16], seed=3)
    with torch.no_grad():
        ref = hf_model(path).generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=PAD,
            eos_token_id=EOS,
        )
    backend = NativeBackend.from_pretrained(path, dtype=torch.float32, compile_mode=compile_mode)
    ours = greedy(backend, ids, mask, NEW_TOKENS)
    return ours, ref[:, ids.shape[1] :]


def assert_cached_decoding_matches_full_forward(model: Transformer, step: CompiledDecodeStep | None = None) -> None:
    """Prefill then one token at a time through the KV cache (or a compiled `step`) gives one full forward's logits."""
    backend = NativeBackend(model, step)
    ids, mask = left_padded([4, 9, 13], seed=1)
    extra = torch.randint(4, 300, (3, 14), generator=torch.Generator().manual_seed(2))
    full = full_logits(model, torch.cat([ids, extra], 1), torch.cat([mask, torch.ones_like(extra)], 1))
    T = ids.shape[1]
    steps = [backend.prefill(PromptBatch(ids, mask), extra.shape[1])]
    steps += [backend.decode(extra[:, i]) for i in range(extra.shape[1] - 1)]
    for i, logits in enumerate(steps):
        torch.testing.assert_close(logits, full[:, T - 1 + i], atol=1e-4, rtol=0)


def greedy(backend: NativeBackend, ids: torch.Tensor, mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Plain argmax loop over the backend, EOS banned (as min_new_tokens does): [B, steps]."""
    logits = backend.prefill(PromptBatch(ids, mask), steps)
    out = []
    for step in range(steps):
        logits[:, EOS] = -float("inf")
        next_ids = logits.argmax(-1)
        out.append(next_ids)
        if step < steps - 1:
            logits = backend.decode(next_ids)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("kind", FP32_KINDS)
def test_logits_match_transformers(textgen_checkpoints, kind):
    path = textgen_checkpoints[kind]
    ids, mask = left_padded([5, 12, 21])
    with torch.no_grad():
        ref = hf_model(path)(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    ours = full_logits(load_transformer(path, dtype=torch.float32), ids, mask)
    real = mask.bool()
    assert ref[real].abs().max() > 1.0  # logits spread enough for the tolerance to bite
    torch.testing.assert_close(ours[real], ref[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", FP32_KINDS)
def test_cached_decoding_matches_full_forward(textgen_checkpoints, kind):
    assert_cached_decoding_matches_full_forward(load_transformer(textgen_checkpoints[kind], dtype=torch.float32))


@pytest.mark.parametrize("kind", [k for k in FP32_KINDS if k != "llama_sharded"])  # same weights as llama
def test_greedy_matches_transformers_generate(textgen_checkpoints, kind):
    ours, ref = native_and_transformers_greedy(textgen_checkpoints[kind])
    assert torch.equal(ours, ref)


def test_sliding_window_changes_attention(textgen_checkpoints):
    """The mistral checkpoint's 8-token window really masks keys (else its parity tests prove little)."""
    windowed = load_transformer(textgen_checkpoints["mistral"], dtype=torch.float32)
    full = Transformer(dataclasses.replace(windowed.cfg, sliding_windows=()))
    full.load_state_dict(windowed.state_dict())
    ids, mask = left_padded([20, 6], seed=4)
    a, b = full_logits(windowed, ids, mask), full_logits(full, ids, mask)
    assert (a[0, -1] - b[0, -1]).abs().max() > 1e-3  # 20 tokens: window cuts keys
    torch.testing.assert_close(a[1, -6:], b[1, -6:], atol=1e-5, rtol=0)  # 6 tokens: window never reached


def test_sharded_checkpoint_has_several_shards(textgen_checkpoints):
    path = textgen_checkpoints["llama_sharded"]
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (path / "model.safetensors").exists()


@pytest.mark.parametrize("kind", ["llama_bf16", "gpt2"])
def test_bf16_loads_and_runs_close_to_transformers(textgen_checkpoints, kind):
    path = textgen_checkpoints[kind]
    backend = NativeBackend.from_pretrained(path, dtype=None if kind == "llama_bf16" else torch.bfloat16)
    assert backend.model.tok_embeddings.weight.dtype == torch.bfloat16  # llama_bf16: the checkpoint's own dtype
    ids, mask = left_padded([6, 11], seed=5)
    ours = [backend.prefill(PromptBatch(ids, mask), 4)]
    ours += [backend.decode(torch.tensor([10 + i, 20 + i])) for i in range(3)]
    extended = torch.cat([ids, torch.tensor([[10, 11, 12], [20, 21, 22]])], 1)
    ext_mask = torch.cat([mask, torch.ones(2, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        ref = hf_model(path, torch.bfloat16)(
            input_ids=extended, attention_mask=ext_mask, position_ids=positions_from_mask(ext_mask)
        ).logits.float()
    for i, logits in enumerate(ours):
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
        expected = ref[:, ids.shape[1] - 1 + i]
        assert (logits - expected).abs().max() < 0.05 * expected.abs().max()


def test_reorder_cache_follows_beam_indices(textgen_checkpoints):
    backend = NativeBackend.from_pretrained(textgen_checkpoints["qwen2"], dtype=torch.float32)
    ids, mask = left_padded([5, 9], seed=6)
    backend.prefill(PromptBatch(ids, mask), 3)
    backend.decode(torch.tensor([7, 8]))
    backend.reorder_cache(torch.tensor([1, 1]))
    got = backend.decode(torch.tensor([9, 10]))
    # reference: the second row alone, reaching the same point without reordering
    backend.prefill(PromptBatch(ids[1:].repeat(2, 1), mask[1:].repeat(2, 1)), 3)
    backend.decode(torch.tensor([8, 8]))
    want = backend.decode(torch.tensor([9, 10]))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_gpt2_checkpoint_without_transformer_prefix(textgen_checkpoints, tmp_path):
    """The original GPT-2 files name tensors `h.0...` rather than `transformer.h.0...`."""
    src = textgen_checkpoints["gpt2"]
    shutil.copy(src / "config.json", tmp_path / "config.json")
    tensors = load_file(src / "model.safetensors")
    save_file({k.removeprefix("transformer."): v for k, v in tensors.items()}, tmp_path / "model.safetensors")
    ids, mask = left_padded([8, 3], seed=7)
    a = full_logits(load_transformer(src, dtype=torch.float32), ids, mask)
    b = full_logits(load_transformer(tmp_path, dtype=torch.float32), ids, mask)
    assert torch.equal(a, b)


def test_older_rope_config_keys_give_the_same_model(textgen_checkpoints):
    """Configs written before transformers v5 carry rope_theta + rope_scaling {"type": ...}."""
    new = read_hf_config(textgen_checkpoints["llama3"])
    old = {k: v for k, v in new.items() if k != "rope_parameters"}
    params = dict(new["rope_parameters"])
    old = {**old, "rope_theta": params.pop("rope_theta"), "rope_scaling": {"type": params.pop("rope_type"), **params}}
    assert transformer_config(old) == transformer_config(new)


def test_unsupported_configs_are_refused_clearly(textgen_checkpoints):
    llama = read_hf_config(textgen_checkpoints["llama"])
    assert is_supported(llama)
    assert not is_supported({**llama, "model_type": "falcon"})
    assert not is_supported({**llama, "rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4}})
    assert not is_supported({**llama, "hidden_act": "gelu_fast"})
    with pytest.raises(ModelNotAvailableError, match="falcon"):
        transformer_config({**llama, "model_type": "falcon"})


def test_int8_weight_only_stays_close_to_fp32(textgen_checkpoints):
    path = textgen_checkpoints["qwen2"]
    ids, mask = left_padded([6, 10], seed=8)
    reference = NativeBackend.from_pretrained(path, dtype=torch.float32).prefill(PromptBatch(ids, mask), 1)
    quantized = NativeBackend(quantize_int8(load_transformer(path, dtype=torch.float32)))
    assert all(isinstance(m.attention.wqkv, Int8Linear) for m in quantized.model.layers)
    logits = quantized.prefill(PromptBatch(ids, mask), 1)
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()


def test_int4_linear_matches_groupwise_dequantized_weights():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40, bias=True)
    x = torch.randn(3, 5, 96)
    # reference: every group of 32 inputs mapped onto 16 evenly spaced levels between its min and max
    w = linear.weight.detach().view(40, 3, 32)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    step = (high - low) / 15
    dequantized = (torch.round((w - low) / step) * step + low).view(40, 96)
    expected = torch.nn.functional.linear(x, dequantized, linear.bias.detach())
    got = Int4Linear(linear)(x.to(torch.bfloat16)).float()
    assert got.shape == (3, 5, 40)
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()
    # and 4 bits are coarse: the unquantized layer is measurably different
    assert (torch.nn.functional.linear(x, linear.weight, linear.bias) - expected).abs().max() > 1e-3


# relative error of the logits: random weights are the hard case for 4 bits (~0.3 measured)
@pytest.mark.parametrize("scheme, kind, tolerance", [("int8", Int8Linear, 0.06), ("int4", Int4Linear, 0.45)])
def test_quantize_option_loads_a_quantized_native_model(textgen_checkpoints, scheme, kind, tolerance):
    path = textgen_checkpoints["llama"]
    ids, mask = left_padded([6, 10], seed=8)
    reference = hf_model(path)(input_ids=ids, attention_mask=mask).logits[:, -1]
    loaded = load_generative_lm(ModelSource(model_id="llama", path=path, options={"quantize": scheme}))
    backend = loaded.make_backend()
    assert all(isinstance(m.mlp.w_up, kind) for m in backend.model.layers)
    logits = backend.prefill(PromptBatch(ids, mask), 1)
    assert (logits - reference).norm() < tolerance * reference.norm()
    with pytest.raises(ModelNotAvailableError, match="int3"):
        load_generative_lm(ModelSource(model_id="llama", path=path, options={"quantize": "int3"}))
