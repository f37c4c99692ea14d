"""The engine behind text-generation pipelines: input order, threads sharing one pipeline, streams, stats."""

from __future__ import annotations

import threading

import torch
from fixtures_decoding import decoding_model_dirs, decoding_models  # noqa: F401  (session fixtures)
from taskhub_textgen.api import GenerationConfig, PromptBatch, generate, model_engine
from taskhub_textgen.checkpoint import load_transformer
from taskhub_textgen.native_backend import NativeBackend

from taskhub import pipeline

PROMPTS = [
    "The quick brown fox",
    "Café crème",
    "A stop string may straddle two tokens, then",
    "Hi",
    "Summaries keep the important sentences of a long document. " * 3,  # several full 16-token blocks
]


def solo_text(path, tokenizer, prompt: str, **controls) -> str:
    """The prompt alone through today's static generate() on the native decoder."""
    ids = tokenizer(prompt)["input_ids"]
    batch = PromptBatch(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    config = GenerationConfig(pad_token_id=0, eos_token_id=[2], **controls)
    model = load_transformer(path, dtype=torch.float32)
    return generate(NativeBackend(model), batch, config, tokenizer)[0][0].text


def test_pipe_list_runs_through_the_engine_in_input_order(decoding_model_dirs, decoding_models):
    path = decoding_model_dirs["llama"]
    _, tokenizer = decoding_models["llama"]
    pipe = pipeline("text-generation", str(path), max_new_tokens=12, return_full_text=False)
    prompts = PROMPTS * 4  # more than one static batch of 8
    results = pipe(prompts, do_sample=True, seed=3, top_k=40)
    expected = {p: solo_text(path, tokenizer, p, max_new_tokens=12, do_sample=True, seed=3, top_k=40) for p in PROMPTS}
    assert [r[0]["generated_text"] for r in results] == [expected[p] for p in prompts]
    stats = model_engine(pipe.model).stats()
    assert stats.steps > 0 and stats.running == stats.waiting == stats.blocks_used == 0
    assert stats.prefix_hit_rate > 0  # the long prompt's copies admitted in the same step shared its blocks
    again = pipe(PROMPTS[-1], do_sample=True, seed=3, top_k=40)
    assert again[0]["generated_text"] == expected[PROMPTS[-1]]
    assert model_engine(pipe.model).stats().prefix_hit_rate > stats.prefix_hit_rate  # and stayed cached


def test_threads_sharing_one_pipeline_get_their_sequential_results(decoding_model_dirs):
    pipe = pipeline("text-generation", str(decoding_model_dirs["gpt2"]), return_full_text=False)

    def call(thread: int, i: int):
        prompt = PROMPTS[(thread + i) % len(PROMPTS)]
        kwargs = dict(max_new_tokens=4 + 3 * i + thread, do_sample=thread % 2 == 1, seed=thread * 10 + i)
        if (thread + i) % 3 == 0:
            return "".join(pipe(prompt, stream=True, **kwargs))
        return pipe([prompt, PROMPTS[i]], **kwargs)

    sequential = {(t, i): call(t, i) for t in range(8) for i in range(5)}
    concurrent: dict[tuple[int, int], object] = {}

    def worker(t: int) -> None:
        for i in range(5):
            concurrent[(t, i)] = call(t, i)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert concurrent == sequential
    assert model_engine(pipe.model).stats().steps > 0


def test_beam_search_keeps_the_static_path(decoding_model_dirs, decoding_models):
    model, tokenizer = decoding_models["gpt2"]
    pipe = pipeline("text-generation", str(decoding_model_dirs["gpt2"]), return_full_text=False)
    ids = tokenizer(PROMPTS[0], return_tensors="pt")
    ref = model.generate(**ids, max_new_tokens=8, num_beams=3, do_sample=False, pad_token_id=0)
    expected = tokenizer.decode(ref[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert pipe(PROMPTS[0], max_new_tokens=8, num_beams=3) == [{"generated_text": expected}]
