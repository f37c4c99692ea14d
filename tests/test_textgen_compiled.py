"""The compiled decode step (compiled.py): same greedy tokens as transformers, same logits as the eager decoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from fixtures_decoding import EOS, PAD
from fixtures_families import family_checkpoints  # noqa: F401  (session fixture)
from fixtures_textgen import textgen_checkpoints  # noqa: F401  (session fixture)
from taskhub_textgen.checkpoint import load_transformer
from taskhub_textgen.compiled import compile_decode_step
from taskhub_textgen.loading import load_generative_lm
from taskhub_textgen.model import Transformer
from taskhub_textgen.native_backend import NativeBackend
from test_textgen_model import (
    NEW_TOKENS,
    assert_cached_decoding_matches_full_forward,
    greedy,
    hf_model,
    left_padded,
    native_and_transformers_greedy,
)

from taskhub.errors import ModelNotAvailableError, ParamError
from taskhub.models import ModelSource


@pytest.mark.slow  # one inductor compile per model (tens of seconds on a busy 2-core machine)
@pytest.mark.parametrize("kind", ["llama", "gpt2", "mistral"])
def test_compiled_greedy_matches_transformers_generate(textgen_checkpoints, kind):
    """RoPE + SwiGLU, learned positions + biases, and an 8-token sliding window, three left-padded rows."""
    ours, ref = native_and_transformers_greedy(textgen_checkpoints[kind], compile_mode="default")
    assert ours.shape == (3, NEW_TOKENS)
    assert torch.equal(ours, ref)


@pytest.mark.slow
def test_compiled_gemma2_decoding_matches_full_forward(family_checkpoints):
    """Soft-capped attention and logits, sandwich norms and local/global layers through the compiled step."""
    model = load_transformer(family_checkpoints["gemma2"], dtype=torch.float32)
    assert_cached_decoding_matches_full_forward(model, compile_decode_step(model, "default"))


@pytest.mark.slow  # nine inductor compiles of a tiny model
def test_one_process_compiles_more_graphs_than_dynamos_recompile_limit(textgen_checkpoints):
    """Nine batch sizes are nine graphs of one code object (dynamo stops at 8 by default): each still decodes right."""
    path = textgen_checkpoints["llama"]
    model = load_transformer(path, dtype=torch.float32)
    backend = NativeBackend(model, compile_decode_step(model, "default"))
    hf = hf_model(path)
    for batch in range(1, 10):
        ids, mask = left_padded([3 + 2 * row for row in range(batch)], seed=batch)
        with torch.no_grad():
            ref = hf.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=3, min_new_tokens=3,
                pad_token_id=PAD, eos_token_id=EOS,
            )  # fmt: skip
        assert torch.equal(greedy(backend, ids, mask, 3), ref[:, ids.shape[1] :]), f"batch {batch}"


def test_compile_option_is_checked_before_loading(textgen_checkpoints):
    source = ModelSource(model_id="llama", path=textgen_checkpoints["llama"], options={"compile": "fastest"})
    with pytest.raises(ModelNotAvailableError, match="compile option 'fastest'.*default, max-autotune"):
        load_generative_lm(source)
    model = load_transformer(textgen_checkpoints["llama"], dtype=torch.float32)
    with pytest.raises(ParamError, match="default, max-autotune"):
        compile_decode_step(model, "fastest")


def test_compile_option_gives_backends_a_shared_compiled_step(textgen_checkpoints):
    loaded = load_generative_lm(
        ModelSource(model_id="llama", path=textgen_checkpoints["llama"], options={"compile": "default"})
    )
    first, second = loaded.make_backend(), loaded.make_backend()
    assert first.step is not None and first.step is second.step  # compiled once per loaded model
    eager = load_generative_lm(
        ModelSource(model_id="llama", path=textgen_checkpoints["llama"], options={"compile": "none"})
    )
    assert eager.make_backend().step is None


def test_position_dependent_rope_decodes_eagerly(textgen_checkpoints):
    """Dynamic-NTK RoPE picks its table from the positions, which one static graph cannot: no compiled step."""
    model = load_transformer(textgen_checkpoints["llama_dynamic"], dtype=torch.float32)
    assert model.cfg.rope is not None and model.cfg.rope.rope_type == "dynamic"
    assert compile_decode_step(model, "default") is None
    static = Transformer(dataclasses.replace(model.cfg, rope=dataclasses.replace(model.cfg.rope, rope_type="default")))
    assert compile_decode_step(static, "default") is not None
