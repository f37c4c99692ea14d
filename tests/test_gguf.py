"""GGUF checkpoints on the native decoder: files written like llama.cpp's converter, checked against transformers."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
import torch
from fixtures_decoding import CORPUS, EOS, PAD
from fixtures_families import SHAPE, WINDOW, family_checkpoints  # noqa: F401  (session fixture)
from fixtures_gguf import write_gguf
from fixtures_textgen import textgen_checkpoints  # noqa: F401  (session fixture)
from safetensors.torch import load_file
from taskhub_textgen.backend import PromptBatch
from taskhub_textgen.gguf import load_gguf_tokenizer, load_gguf_transformer
from taskhub_textgen.native_backend import NativeBackend, positions_from_mask
from taskhub_textgen.quantize import Int8Linear
from test_textgen_model import full_logits, greedy, hf_model, left_padded
from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM

from taskhub import run_task
from taskhub.errors import ModelNotAvailableError


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


def transformers_logits(path: Path, ids: torch.Tensor, mask: torch.Tensor, rounding=None) -> torch.Tensor:
    """fp32 transformers logits, optionally with every 2-D weight passed through `rounding` first."""
    model = hf_model(path)
    if rounding is not None:
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 2:
                    param.copy_(rounding(param))
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits


def q8_0_roundtrip(weight: torch.Tensor) -> torch.Tensor:
    """What the gguf library's own Q8_0 quantizer keeps of a weight (the reference for Q8_0 files)."""
    Q8_0 = gguf.GGMLQuantizationType.Q8_0
    blocks = gguf.quants.quantize(weight.numpy(), Q8_0)
    return torch.from_numpy(gguf.quants.dequantize(blocks, Q8_0).copy())


ROUNDINGS = {
    "F32": None,
    "F16": lambda w: w.half().float(),
    "Q8_0": q8_0_roundtrip,
}


@pytest.mark.parametrize("kind", ["llama", "llama_tied", "qwen2", "llama3"])
@pytest.mark.parametrize("qtype", ["F32", "F16", "Q8_0"])
def test_gguf_logits_match_transformers_on_the_same_weights(textgen_checkpoints, gguf_dir, kind, qtype):
    """F32 is the checkpoint itself; F16 and Q8_0 match transformers running the weights the file keeps.

    The qwen2 checkpoint's 8-token window on layer 1 has no GGUF key (llama.cpp ignores it), so
    its prompts stay within 8 tokens; the point there is the q/k/v biases.
    """
    path = textgen_checkpoints[kind]
    file = write_gguf(path, gguf_dir / f"{kind}-{qtype}.gguf", qtype)
    ids, mask = left_padded([5, 8] if kind == "qwen2" else [5, 12, 40])  # llama3: 40 > its original 32 positions
    ref = transformers_logits(path, ids, mask, ROUNDINGS[qtype])
    ours = full_logits(load_gguf_transformer(file, dtype=torch.float32), ids, mask)
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], atol=1e-4, rtol=0)


def test_bf16_gguf_loads_in_bf16_close_to_transformers(textgen_checkpoints, gguf_dir):
    path = textgen_checkpoints["llama"]
    model = load_gguf_transformer(write_gguf(path, gguf_dir / "llama-BF16.gguf", "BF16"))
    assert model.tok_embeddings.weight.dtype == torch.bfloat16  # the file's own dtype
    ids, mask = left_padded([6, 11], seed=5)
    ref = transformers_logits(path, ids, mask, lambda w: w.bfloat16().float())
    ours = full_logits(model, ids, mask).float()
    real = mask.bool()
    assert (ours[real] - ref[real]).abs().max() < 0.05 * ref[real].abs().max()


def test_q8_0_gguf_runs_int8_weight_only_by_default(textgen_checkpoints, gguf_dir):
    """A Q8_0 file keeps int8 weights (requantized per output row); logits stay within a few % of fp32."""
    path = textgen_checkpoints["llama"]
    file = write_gguf(path, gguf_dir / "llama-Q8_0-int8.gguf", "Q8_0")
    model = load_gguf_transformer(file)
    assert all(isinstance(layer.attention.wqkv, Int8Linear) for layer in model.layers)
    ids, mask = left_padded([6, 10], seed=8)
    reference = transformers_logits(path, ids, mask)[:, -1]
    logits = NativeBackend(model).prefill(PromptBatch(ids, mask), 1)
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()


def test_gguf_tokenizer_equals_the_original(textgen_checkpoints, gguf_dir):
    path = textgen_checkpoints["llama"]
    file = write_gguf(path, gguf_dir / "llama-tok.gguf", "F32")
    ours, theirs = load_gguf_tokenizer(file), AutoTokenizer.from_pretrained(path)
    for text in set(CORPUS):
        ids = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours(text, add_special_tokens=False)["input_ids"] == ids
        assert ours.decode(ids) == theirs.decode(ids)
    assert (ours.eos_token_id, ours.pad_token_id) == (EOS, PAD)


def test_run_task_on_a_gguf_file_equals_the_safetensors_checkpoint(textgen_checkpoints, gguf_dir):
    path = textgen_checkpoints["llama"]
    file = write_gguf(path, gguf_dir / "llama-run.gguf", "F32")
    kwargs = dict(max_new_tokens=12, return_full_text=False, dtype="float32")
    prompts = ["The quick brown fox", "Café crème"]
    assert run_task("text-generation", prompts, model=str(file), **kwargs) == run_task(
        "text-generation", prompts, model=str(path), **kwargs
    )


@pytest.fixture(scope="module")
def gemma2_for_gguf(tmp_path_factory: pytest.TempPathFactory, family_checkpoints) -> Path:
    """A Gemma 2 whose query scale is 1/sqrt(head_dim): the only one llama.cpp's metadata can describe."""
    from fixtures_decoding import build_tokenizer

    root = tmp_path_factory.mktemp("gemma2_gguf")
    tokenizer = build_tokenizer(root)
    torch.manual_seed(0)
    config = Gemma2Config(
        **SHAPE,
        vocab_size=len(tokenizer),
        num_hidden_layers=2,
        query_pre_attn_scalar=SHAPE["head_dim"],
        sliding_window=WINDOW,
        attn_logit_softcapping=2.0,
        final_logit_softcapping=4.0,
    )
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0, 0.3)
    model.save_pretrained(root, safe_serialization=True)
    return root


@pytest.mark.parametrize("kind", ["gemma2", "gemma3", "phi3_window", "phi3_longrope"])
def test_gguf_families_greedy_matches_transformers(family_checkpoints, gemma2_for_gguf, gguf_dir, kind):
    path = gemma2_for_gguf if kind == "gemma2" else family_checkpoints[kind]
    file = write_gguf(path, gguf_dir / f"{kind}.gguf", "F32")
    ids, mask = left_padded([7, 3, 16], seed=3)
    with torch.no_grad():
        ref = hf_model(path).generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=40,
            min_new_tokens=40,
            pad_token_id=PAD,
            eos_token_id=EOS,
        )
    ours = greedy(NativeBackend(load_gguf_transformer(file)), ids, mask, 40)
    assert torch.equal(ours, ref[:, ids.shape[1] :])


def test_unsupported_gguf_architecture_is_refused_clearly(tmp_path):
    writer = gguf.GGUFWriter(tmp_path / "falcon.gguf", "falcon")
    writer.add_token_list(["a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelNotAvailableError, match="falcon"):
        load_gguf_transformer(tmp_path / "falcon.gguf")


def test_gguf_weights_are_the_converter_layout(textgen_checkpoints, gguf_dir):
    """The file really holds llama.cpp's permuted q rows (so the loader's un-permutation is exercised)."""
    path = textgen_checkpoints["llama"]
    file = write_gguf(path, gguf_dir / "llama-layout.gguf", "F32")
    stored = {t.name: t for t in gguf.GGUFReader(str(file)).tensors}["blk.0.attn_q.weight"]
    original = load_file(path / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(torch.from_numpy(stored.data.copy()), original)
