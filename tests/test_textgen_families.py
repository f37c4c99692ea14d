"""Gemma 2, Gemma 3 (text) and Phi-3 in the native decoder against transformers: logits, caching, greedy, beams."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from fixtures_decoding import EOS, PAD
from fixtures_families import ORIGINAL_CONTEXT, WINDOW, family_checkpoints  # noqa: F401  (session fixture)
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.checkpoint import load_transformer, read_hf_config, transformer_config
from taskhub_textgen.config import GenerationConfig
from taskhub_textgen.generate import generate
from taskhub_textgen.model import Transformer
from taskhub_textgen.native_backend import NativeBackend, is_supported, positions_from_mask
from test_textgen_model import (
    assert_cached_decoding_matches_full_forward,
    full_logits,
    hf_model,
    left_padded,
    native_and_transformers_greedy,
)

FAMILIES = ["gemma2", "gemma3", "gemma3_multimodal", "phi3_longrope", "phi3_window"]
NEW_TOKENS = 64


@pytest.mark.parametrize("kind", FAMILIES)
def test_family_is_served_natively(family_checkpoints, kind):
    assert is_supported(read_hf_config(family_checkpoints[kind]))


@pytest.mark.parametrize("kind", FAMILIES)
def test_logits_match_transformers(family_checkpoints, kind):
    path = family_checkpoints[kind]
    ids, mask = left_padded([5, 12, 21, 40])  # 21 and 40 tokens: past the 8-token window
    with torch.no_grad():
        ref = hf_model(path)(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
    ours = full_logits(load_transformer(path, dtype=torch.float32), ids, mask)
    real = mask.bool()
    assert ref[real].abs().max() > 1.0
    torch.testing.assert_close(ours[real], ref[real], atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", FAMILIES)
def test_cached_decoding_matches_full_forward(family_checkpoints, kind):
    assert_cached_decoding_matches_full_forward(load_transformer(family_checkpoints[kind], dtype=torch.float32))


@pytest.mark.parametrize("kind", FAMILIES)
def test_greedy_matches_transformers_generate(family_checkpoints, kind):
    """Prompts up to 16 tokens plus 64 new ones: far past the window, and past Phi-3's original context."""
    assert 16 + NEW_TOKENS > max(WINDOW, ORIGINAL_CONTEXT)  # the longest prompt of the helper, then NEW_TOKENS
    ours, ref = native_and_transformers_greedy(family_checkpoints[kind])
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("kind", FAMILIES)
def test_beam_search_matches_transformers_generate(family_checkpoints, kind):
    path = family_checkpoints[kind]
    ids, mask = left_padded([6, 14], seed=4)
    kwargs = dict(num_beams=3, num_return_sequences=2, length_penalty=1.0, max_new_tokens=30)
    with torch.no_grad():
        ref = hf_model(path).generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            pad_token_id=PAD,
            eos_token_id=EOS,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )
    backend = NativeBackend.from_pretrained(path, dtype=torch.float32)
    config = GenerationConfig(eos_token_id=EOS, pad_token_id=PAD, **kwargs)
    got = [g for gens in generate(backend, PromptBatch(ids, mask), config, None) for g in gens]
    assert len(got) == 4
    for row, gen in enumerate(got):
        length = int((ref.beam_indices[row] >= 0).sum())
        assert length > ORIGINAL_CONTEXT - ids.shape[1]  # the beams ran past the window and Phi-3's switch point
        assert gen.token_ids == ref.sequences[row, ids.shape[1] : ids.shape[1] + length].tolist()
        assert gen.score == pytest.approx(ref.sequences_scores[row].item(), abs=1e-4)


FEATURES = {
    "gemma2": ["attn_softcap", "final_softcap", "sliding_windows", "embed_scale", "sandwich_norms", "attn_scale"],
    "gemma3": ["qk_norm", "local_rope", "final_softcap", "sliding_windows"],
    "phi3_window": ["sliding_windows"],
}


@pytest.mark.parametrize("kind, feature", [(k, f) for k, fs in FEATURES.items() for f in fs])
def test_each_family_feature_changes_the_logits(family_checkpoints, kind, feature):
    """Switching one feature off moves the logits, so the parity tests above really exercise it."""
    model = load_transformer(family_checkpoints[kind], dtype=torch.float32)
    off = {"sliding_windows": (), "sandwich_norms": False, "qk_norm": False}.get(feature)
    other = Transformer(dataclasses.replace(model.cfg, **{feature: off}))
    other.load_state_dict(model.state_dict(), strict=False)
    ids, mask = left_padded([30], seed=5)
    assert (full_logits(model, ids, mask) - full_logits(other, ids, mask)).abs().max() > 1e-3


def test_phi3_longrope_switches_tables_past_the_original_context(family_checkpoints):
    model = load_transformer(family_checkpoints["phi3_longrope"], dtype=torch.float32)
    rotary = model.rotary
    assert rotary is not None and not torch.equal(rotary.inv_freq, rotary.long_inv_freq)
    short = rotary(torch.arange(ORIGINAL_CONTEXT)[None], torch.float32)
    long = rotary(torch.arange(ORIGINAL_CONTEXT + 1)[None], torch.float32)
    assert not torch.allclose(short[0][:, 1:], long[0][:, 1:ORIGINAL_CONTEXT])


def test_gemma3_older_config_keys_give_the_same_model(family_checkpoints):
    """Gemma 3 configs written before transformers v5: rope_theta, rope_local_base_freq, rope_scaling."""
    new = read_hf_config(family_checkpoints["gemma3"])
    nested = new["rope_parameters"]
    full = dict(nested["full_attention"])
    old = {k: v for k, v in new.items() if k != "rope_parameters"}
    old["rope_theta"] = full.pop("rope_theta")
    old["rope_local_base_freq"] = nested["sliding_attention"]["rope_theta"]
    old["rope_scaling"] = full
    assert transformer_config(old) == transformer_config(new)


def test_phi3_legacy_su_rope_type_is_longrope(family_checkpoints):
    new = read_hf_config(family_checkpoints["phi3_longrope"])
    old = {**new, "rope_parameters": None, "rope_scaling": {**new["rope_parameters"], "rope_type": "su"}}
    assert transformer_config(old) == transformer_config(new)


def test_gemma2_bf16_stays_close_to_transformers(family_checkpoints):
    path = family_checkpoints["gemma2"]
    ids, mask = left_padded([6, 19], seed=6)
    with torch.no_grad():
        ref = hf_model(path, torch.bfloat16)(
            input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)
        ).logits.float()
    ours = full_logits(load_transformer(path, dtype=torch.bfloat16), ids, mask).float()
    real = mask.bool()
    assert (ours[real] - ref[real]).abs().max() < 0.05 * ref[real].abs().max()
