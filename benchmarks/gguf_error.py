"""Logit error of GGUF files (F16, BF16, Q8_0) against the unquantized model they were converted from.

Random weights of the SmolLM2-135M shape; files written by tests/fixtures_gguf.py the way
llama.cpp's converter writes them. Run: python benchmarks/gguf_error.py  (about a minute)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures_decoding import build_tokenizer  # noqa: E402
from fixtures_gguf import write_gguf  # noqa: E402
from taskhub_textgen.checkpoint import load_transformer  # noqa: E402
from taskhub_textgen.gguf import load_gguf_transformer  # noqa: E402
from test_textgen_model import full_logits, left_padded  # noqa: E402


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="gguf_error_"))
    tokenizer = build_tokenizer(root)
    torch.manual_seed(0)
    shape = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9)
    config = LlamaConfig(
        **shape,
        vocab_size=len(tokenizer),
        num_key_value_heads=3,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.05,
    )
    LlamaForCausalLM(config).save_pretrained(root)
    ids, mask = left_padded([32, 20], seed=0)
    real = mask.bool()
    ref = full_logits(load_transformer(root, dtype=torch.float32), ids, mask)[real]
    scale = ref.abs().max().item()
    print(f"reference: fp32 safetensors, max |logit| {scale:.2f}, {int(real.sum())} positions")
    print("| file | loaded as | max abs logit error | relative to max logit | top-1 agreement |")
    print("|---|---|---|---|---|")
    for qtype, dtypes in (("F16", [None]), ("BF16", [None]), ("Q8_0", [None, torch.float32])):
        file = write_gguf(root, root / f"model-{qtype}.gguf", qtype)
        for dtype in dtypes:
            got = full_logits(load_gguf_transformer(file, dtype=dtype), ids, mask).float()[real]
            err = (got - ref).abs().max().item()
            top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
            how = {None: "the file's own", torch.float32: "dtype=float32"}[dtype]
            print(f"| {qtype} | {how} | {err:.4f} | {err / scale:.3f} | {top1:.3f} |")


if __name__ == "__main__":
    main()
