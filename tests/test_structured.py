"""Structured output through run_task, the CLI and batch jobs: equal to transformers + llguidance, valid, streamed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import llguidance
import llguidance.hf
import llguidance.numpy
import pytest
import torch
from fixtures_batch import read_records, write_job, write_jsonl
from fixtures_decoding import EOS, PAD, decoding_model_dirs, decoding_models  # noqa: F401
from fixtures_structured import sentencepiece_llama_dir  # noqa: F401
from pydantic import BaseModel, Field
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

import taskhub
from taskhub import pipeline, run_task
from taskhub.cli import main
from taskhub.errors import ParamError

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
REGEX = r"[0-9]{3}-[a-z]{2,5}"
CHOICES = ["positive", "negative", "neutral"]
GRAMMAR = 'start: "(" NUM ("," NUM)* ")"\nNUM: /[1-9][0-9]?/'


class LLGuidanceReference(LogitsProcessor):
    """llguidance's own matcher and numpy mask helpers as a transformers logits processor (one row)."""

    def __init__(self, tokenizer, grammar: str, prompt_len: int) -> None:
        self.matcher = llguidance.LLMatcher(llguidance.hf.from_tokenizer(tokenizer), grammar, log_level=0)
        self.prompt_len = prompt_len
        self.bitmask = llguidance.numpy.allocate_token_bitmask(1, len(tokenizer))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.prompt_len:
            assert self.matcher.consume_token(int(input_ids[0, -1]))
        llguidance.numpy.fill_next_token_bitmask(self.matcher, self.bitmask)
        llguidance.numpy.apply_token_bitmask_inplace(scores.numpy(), self.bitmask)
        return scores


def reference_grammar(kind: str) -> str:
    if kind == "json":  # compact JSON, as documented in docs/structured-output.md
        return llguidance.LLMatcher.grammar_from_json_schema(PERSON, overrides={"whitespace_flexible": False})
    if kind == "regex":
        return llguidance.grammar_from("regex", REGEX)
    if kind == "choices":
        return llguidance.grammar_from("choice", json.dumps(CHOICES))
    return llguidance.grammar_from("lark", GRAMMAR)


FORMAT_PARAMS = {
    "json": {"response_format": PERSON_FORMAT},
    "regex": {"regex": REGEX},
    "choices": {"choices": CHOICES},
    "grammar": {"grammar": GRAMMAR},
}


@pytest.mark.parametrize("name", ["gpt2", "llama", "neox", "sentencepiece"])  # native x2, transformers, ▁ tokenizer
def test_greedy_equals_transformers_generate_with_llguidance_processor(
    decoding_model_dirs, sentencepiece_llama_dir, name
):
    path = sentencepiece_llama_dir if name == "sentencepiece" else decoding_model_dirs[name]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    eos = model.config.eos_token_id
    pipe = pipeline("text-generation", str(path), max_new_tokens=40, return_full_text=False, logprobs=0)
    for kind, params in FORMAT_PARAMS.items():
        for prompt in ["The quick brown fox", "Café crème"]:
            ids = tokenizer(prompt)["input_ids"]
            processor = LLGuidanceReference(tokenizer, reference_grammar(kind), len(ids))
            out = model.generate(
                torch.tensor([ids]),
                max_new_tokens=40,
                do_sample=False,
                pad_token_id=PAD if name != "sentencepiece" else eos,
                logits_processor=LogitsProcessorList([processor]),
            )
            expected = out[0, len(ids) :].tolist()
            [result] = pipe(prompt, **params)
            got = [step["token_id"] for step in result["logprobs"]]
            # the grammar's end stops decoding at once; transformers spends one more step on the forced EOS
            assert got == (expected[:-1] if expected[-1] == eos and got[-1:] != [eos] else expected), (kind, prompt)
            assert result["generated_text"] == tokenizer.decode(got, skip_special_tokens=True)


def check_valid(kind: str, result: dict) -> None:
    """A completed result obeys its format (checked by jsonschema / re / membership)."""
    text = result["generated_text"]
    assert result["error"] is None, result
    if kind == "json":
        assert result["parsed"] == json.loads(text)
        jsonschema.validate(result["parsed"], PERSON)
    elif kind == "regex":
        assert re.fullmatch(REGEX, text)
    elif kind == "choices":
        assert text in CHOICES
    else:
        assert re.fullmatch(r"\([1-9][0-9]?(,[1-9][0-9]?)*\)", text)


@pytest.mark.slow
def test_sampling_seeds_num_return_sequences_and_beams_stay_valid(decoding_model_dirs):
    pipe = pipeline("text-generation", str(decoding_model_dirs["llama"]), max_new_tokens=48, return_full_text=False)
    prompts = ["The quick brown fox", "Café crème"]
    completed = 0
    for kind, params in FORMAT_PARAMS.items():
        runs = [
            pipe(prompts, do_sample=True, seed=seed, temperature=1.3, top_k=50, repetition_penalty=1.2, **params)
            for seed in range(5)
        ]
        runs.append(pipe(prompts, do_sample=True, seed=7, num_return_sequences=3, **params))
        runs.append(pipe(prompts, num_beams=3, num_return_sequences=2, **params))
        for run in runs:
            for per_prompt in run:
                for result in per_prompt:
                    if result["finish_reason"] == "length":
                        assert result["error"] and result.get("parsed") is None
                        continue
                    assert result["finish_reason"] == "eos"
                    check_valid(kind, result)
                    completed += 1
    assert completed >= 60  # most runs complete within 48 tokens
    same = pipe(prompts, do_sample=True, seed=3, **FORMAT_PARAMS["json"])
    assert same == pipe(prompts, do_sample=True, seed=3, **FORMAT_PARAMS["json"])  # seeds reproduce


def test_unconstrained_model_is_garbage_and_constraint_changes_that(decoding_model_dirs):
    path = str(decoding_model_dirs["gpt2"])
    [free] = run_task("text-generation", "The quick brown fox", model=path, max_new_tokens=30, return_full_text=False)
    with pytest.raises(json.JSONDecodeError):
        json.loads(free["generated_text"])
    [bound] = run_task(
        "text-generation", "The quick brown fox", model=path, max_new_tokens=60, response_format=PERSON_FORMAT
    )
    assert bound["generated_text"].startswith("The quick brown fox{")  # return_full_text: prompt + JSON
    jsonschema.validate(bound["parsed"], PERSON)


def test_stream_deltas_are_valid_prefixes_and_join_to_the_text(decoding_model_dirs):
    pipe = pipeline("text-generation", str(decoding_model_dirs["gpt2"]), max_new_tokens=60, return_full_text=False)
    prompts = ["The quick brown fox", "Café crème", "A stop string"]
    expected = pipe(prompts, response_format=PERSON_FORMAT, do_sample=True, seed=5)
    streams = pipe(prompts, response_format=PERSON_FORMAT, do_sample=True, seed=5, stream=True)
    for stream, [want] in zip(streams, expected):
        text = ""
        for delta in stream:
            text += delta  # a prefix of a grammar-valid text is a valid prefix
            assert want["generated_text"].startswith(text) and delta
        assert text == want["generated_text"]
        assert stream.generation.finish_reason == want["finish_reason"]


def test_length_cut_is_reported_never_a_silently_invalid_value(decoding_model_dirs):
    [cut] = run_task(
        "text-generation",
        "The quick brown fox",
        model=str(decoding_model_dirs["gpt2"]),
        max_new_tokens=5,
        response_format=PERSON_FORMAT,
        return_full_text=False,
    )
    assert cut["finish_reason"] == "length" and cut["parsed"] is None
    assert "max_new_tokens" in cut["error"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut["generated_text"])


def test_stop_string_inside_the_grammar_is_reported(decoding_model_dirs):
    [result] = run_task(
        "text-generation",
        "The quick brown fox",
        model=str(decoding_model_dirs["gpt2"]),
        max_new_tokens=60,
        response_format=PERSON_FORMAT,
        stop=['"name"'],
        return_full_text=False,
    )
    assert result["generated_text"] == "{"  # properties come in schema order: name first
    assert result["finish_reason"] == "stop" and result["parsed"] is None and "stop string" in result["error"]


class Person(BaseModel):
    name: str = Field(max_length=5)
    age: int = Field(ge=0, le=9)
    admin: bool


def test_pydantic_model_gives_an_instance_and_chat_goes_through_the_template(decoding_model_dirs):
    messages = [{"role": "user", "content": "Who are you?"}]
    [result] = run_task(
        "text-generation", messages, model=str(decoding_model_dirs["llama"]), max_new_tokens=40, response_format=Person
    )
    assert isinstance(result["parsed"], Person)
    assert result["parsed"] == Person.model_validate_json(result["generated_text"][-1]["content"])
    assert result["generated_text"][:-1] == messages


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "bogus"}}}}, "bogus"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "schema"),
        ({"response_format": {"type": "xml"}}, "response_format must be"),
        ({"regex": "a(b"}, "unclosed group"),
        ({"grammar": "start: missing_rule"}, "missing_rule"),
        ({"choices": []}, "non-empty"),
        ({"regex": "a", "choices": ["a"]}, "at most one"),
    ],
)
def test_invalid_formats_are_param_errors_before_decoding(decoding_model_dirs, params, problem):
    with pytest.raises(ParamError, match=re.escape(problem)):
        run_task("text-generation", "x", model=str(decoding_model_dirs["gpt2"]), **params)


def test_cli_reads_the_schema_from_a_file(tmp_path, capsys, decoding_model_dirs):
    (tmp_path / "schema.json").write_text(json.dumps(PERSON))
    (tmp_path / "g.lark").write_text(GRAMMAR)
    common = ["run", "text-generation", "The fox", "--model", str(decoding_model_dirs["gpt2"]), "--json"]
    assert (
        main([*common, "--param", f"response_format=@{tmp_path / 'schema.json'}", "--param", "max_new_tokens=60"]) == 0
    )
    [result] = json.loads(capsys.readouterr().out)
    jsonschema.validate(result["parsed"], PERSON)
    assert main([*common, "--param", f"grammar=@{tmp_path / 'g.lark'}", "--param", "return_full_text=false"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["generated_text"].startswith("(")
    assert main([*common, "--param", f"regex=@{tmp_path / 'missing.txt'}"]) == 1
    assert "no such file" in capsys.readouterr().err


def test_batch_job_with_per_item_schemas_writes_valid_parsed_values(tmp_path: Path, decoding_model_dirs):
    schemas = [
        PERSON,
        {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "minItems": 2, "maxItems": 4},
        {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": False,
        },
    ]
    rows = [
        {
            "id": f"r{i}",
            "prompt": {"text": f"Item {i}:", "format": {"type": "json_schema", "json_schema": {"schema": s}}},
        }
        for i, s in enumerate(schemas * 2)
    ]
    rows.append({"id": "bad", "prompt": {"text": "x", "format": {"type": "json_schema", "json_schema": {"schema": 5}}}})
    write_jsonl(tmp_path / "in.jsonl", rows)
    job = write_job(
        tmp_path,
        task="text-generation",
        model=str(decoding_model_dirs["gpt2"]),
        inputs={"jsonl": "in.jsonl", "field": "prompt", "id_field": "id"},
        params={"response_format_field": "format", "max_new_tokens": 60, "return_full_text": False},
    )
    summary = taskhub.run_job(job, quiet=True)
    assert (summary["done"], summary["failed"]) == (6, 1)
    records = {r["id"]: r for r in read_records(tmp_path / "out.jsonl")}
    for i, schema in enumerate(schemas * 2):
        [output] = records[f"r{i}"]["output"]
        assert output["error"] is None and output["parsed"] == json.loads(output["generated_text"])
        jsonschema.validate(output["parsed"], schema)
    assert records["bad"]["error"]["type"] == "ParamError"


def test_job_level_schema_in_params_and_bad_schema_fails_the_dry_run(tmp_path: Path, decoding_model_dirs):
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"Doc {i}"} for i in range(3)])
    common = {"task": "text-generation", "model": str(decoding_model_dirs["llama"])}
    common["inputs"] = {"jsonl": "in.jsonl", "field": "text"}
    good = write_job(tmp_path, "good", **common, params={"response_format": PERSON_FORMAT, "max_new_tokens": 60})
    assert taskhub.run_job(good, quiet=True)["done"] == 3
    for record in read_records(tmp_path / "out.jsonl"):
        jsonschema.validate(record["output"][0]["parsed"], PERSON)
    bad_format = {"type": "json_schema", "json_schema": {"schema": {"type": "object", "minProperties": "x"}}}
    bad = write_job(tmp_path, "bad", **common, params={"response_format": bad_format}, output="bad.jsonl")
    with pytest.raises(taskhub.errors.ManifestError, match="JSON Schema"):
        taskhub.run_job(bad, quiet=True, dry_run=True)


def test_grammar_constraint_interface_for_the_engine(decoding_models):
    """The per-sequence object the batching engine uses: allowed/mask, advance, is_complete, fork."""
    from taskhub_textgen.constrain import GrammarConstraint, OutputFormat

    _, tokenizer = decoding_models["gpt2"]
    vocab = len(tokenizer) + 8  # logits wider than the tokenizer (padded embeddings): the extra ids stay banned
    start = GrammarConstraint.start(OutputFormat("regex", "[0-9]{2}x"), tokenizer, [EOS], vocab)
    allowed = start.allowed(vocab)
    texts = {t: tokenizer.decode([t]) for t in allowed.nonzero()[:, 0].tolist()}
    assert texts and all(re.fullmatch(r"[0-9]{1,2}x?", text) for text in texts.values())
    expected = {t for t in range(len(tokenizer)) if re.fullmatch(r"[0-9]{1,2}x?", tokenizer.decode([t]))}
    assert set(texts) == expected and not allowed[len(tokenizer) :].any()
    scores = start.mask(torch.zeros(vocab))
    assert torch.equal(torch.isfinite(scores), allowed)
    digit = next(t for t, text in texts.items() if text == "4")
    branch = start.fork()
    assert branch.advance(digit) and not branch.is_complete() and not start.is_accepting()
    assert not branch.allowed(vocab)[EOS]  # EOS only where the grammar accepts
    assert branch.advance(digit) and branch.advance(tokenizer.convert_tokens_to_ids("x"))
    assert branch.is_complete() and branch.is_accepting() and branch.allowed(vocab)[EOS]
    assert start.allowed(vocab).equal(allowed)  # the fork left the original where it was
    assert not start.advance(tokenizer.convert_tokens_to_ids("x")) and start.error  # a token the grammar forbids


@pytest.mark.parametrize("task", ["text2text-generation", "summarization"])
def test_encoder_decoder_tasks_return_parsed_values(decoding_model_dirs, task):
    """Every task that decodes through textgen shapes structured results the same way."""
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}}
    text = "Summaries keep the important sentences of a long document."
    (out,) = run_task(task, text, model=str(decoding_model_dirs["bart"]), response_format=fmt, max_new_tokens=24)
    key = "generated_text" if task == "text2text-generation" else "summary_text"
    assert out["finish_reason"] == "eos", out
    assert json.loads(out[key]) == out["parsed"]
    jsonschema.validate(out["parsed"], schema)
    (choice,) = run_task(task, text, model=str(decoding_model_dirs["bart"]), choices=["yes", "no"], max_new_tokens=8)
    assert choice[key] in ("yes", "no") and "parsed" not in choice
