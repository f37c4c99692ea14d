"""Input kinds come from plugins: how the CLI, batch jobs and the server read an input of each kind.

A chat file is read like chat text on the command line, for the CLI and for batch jobs alike: a JSON
list of messages is a conversation, any other text is the prompt. A plugin's own kind reads its files
the same way on both paths."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_plugins import installed, write_manifest
from fixtures_batch import read_records, write_job
from fixtures_decoding import PAD, decoding_model_dirs, decoding_models  # noqa: F401
from fixtures_serve import running_server

import taskhub
from taskhub import hookimpl
from taskhub.cli import main

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a dessert."}]


def chat_reply(model: Any, tokenizer: Any, chat: list[dict[str, str]]) -> str:
    """transformers' greedy reply to `chat` through the tokenizer's chat template (the reference)."""
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    out = model.generate(torch.tensor([list(ids)]), max_new_tokens=8, do_sample=False, pad_token_id=PAD)
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_a_chat_file_is_a_json_conversation_or_a_prompt_in_the_cli_and_in_a_batch_job(
    tmp_path: Path,
    decoding_models,
    decoding_model_dirs,
    capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    model, tokenizer = decoding_models["llama"]
    expected = [{"generated_text": [*CHAT, {"role": "assistant", "content": chat_reply(model, tokenizer, CHAT)}]}]
    chats = tmp_path / "chats"
    chats.mkdir()
    (chats / "dessert.json").write_text(json.dumps(CHAT))
    (chats / "prompt.txt").write_text("Name a dessert.")  # not JSON: the prompt itself
    (chats / "latin1.txt").write_bytes("Cr\xe8me br\xfbl\xe9e".encode("latin-1"))  # not UTF-8: refused
    model_dir = str(decoding_model_dirs["llama"])
    run = ["run", "text-generation", "--model", model_dir, "--param", "max_new_tokens=8", "--json"]

    assert main([*run, str(chats / "dessert.json")]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    ids = tokenizer("Name a dessert.", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=PAD)
    prompt_expected = [{"generated_text": tokenizer.decode(out[0], skip_special_tokens=True)}]
    assert main([*run, str(chats / "prompt.txt")]) == 0
    assert json.loads(capsys.readouterr().out) == prompt_expected
    assert main([*run, str(chats / "latin1.txt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {chats / 'latin1.txt'} is not UTF-8 text")

    job = write_job(
        tmp_path, task="text-generation", model=model_dir, params={"max_new_tokens": 8}, inputs={"files": "chats/*"}
    )
    summary = taskhub.run_job(job)
    assert (summary["done"], summary["failed"]) == (2, 1)
    records = {r["id"]: r for r in read_records(tmp_path / "out.jsonl")}
    assert records["dessert.json"]["output"] == expected and records["dessert.json"]["error"] is None
    assert records["prompt.txt"]["output"] == prompt_expected
    error = records["latin1.txt"]["error"]
    assert error["type"] == "BadInputError" and error["message"] == err[0].removeprefix("error: ")


def test_chat_text_on_the_command_line_is_a_prompt_unless_it_is_a_json_conversation(
    decoding_model_dirs,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_dir = str(decoding_model_dirs["llama"])
    run = ["run", "text-generation", "--model", model_dir, "--param", "max_new_tokens=8", "--json"]
    for literal, python_input in (("Name a dessert.", "Name a dessert."), (json.dumps(CHAT), CHAT), ("42", "42")):
        assert main([*run, literal]) == 0
        want = taskhub.run_task("text-generation", python_input, model=model_dir, max_new_tokens=8)
        assert json.loads(capsys.readouterr().out) == want


def test_a_bad_chat_message_fails_in_the_cli_and_fails_its_item_alone_in_a_batch_job(
    tmp_path: Path,
    decoding_model_dirs,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    chats = tmp_path / "chats"
    chats.mkdir()
    (chats / "good.json").write_text(json.dumps(CHAT))
    (chats / "bad.json").write_text(json.dumps([CHAT[0], {"role": "user", "content": 7}]))
    model_dir = str(decoding_model_dirs["llama"])
    run = ["run", "text-generation", "--model", model_dir, "--param", "max_new_tokens=4", "--json"]
    message = "Input 0: message 1 has content of type int; expected a string or a list of content parts"
    assert main([*run, str(chats / "bad.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}")
    assert main([*run, json.dumps([{"role": 5, "content": None}])]) == 1  # chat text on the command line
    assert capsys.readouterr().err.startswith("error: Input 0: message 0 has role 5; expected one of system, user")

    job = write_job(
        tmp_path, task="text-generation", model=model_dir, params={"max_new_tokens": 4}, inputs={"files": "chats/*"}
    )
    summary = taskhub.run_job(job)
    assert (summary["done"], summary["failed"]) == (1, 1)
    records = {r["id"]: r for r in read_records(tmp_path / "out.jsonl")}
    assert records["good.json"]["error"] is None and records["good.json"]["output"]
    error = records["bad.json"]["error"]
    assert records["bad.json"]["output"] is None and error["type"] == "BadInputError"
    assert "message 1 has content of type int" in error["message"]


POINT_TASK = """
task: norm
modality: geometry
input: point
model_stage: {stage: geo.norm}
"""

SIZE_TASK = """
task: blob-size
modality: blobs
input: blob
model_stage: {stage: geo.size}
"""


def read_point(data: bytes, source: str) -> list[float]:
    """A point file holds two numbers separated by a space: "3 4"."""
    return parse_point(taskhub.read_utf8(data, source))


def parse_point(text: str) -> list[float]:
    try:
        x, y = (float(part) for part in text.split())
    except ValueError:
        raise taskhub.BadInputError(f"{text!r} is not a point; expected two numbers such as '3 4'") from None
    return [x, y]


def size_of(value: str | bytes) -> int:
    """A blob arrives as a path (files) or as bytes (stdin): its size either way."""
    return len(value) if isinstance(value, bytes) else Path(value).stat().st_size


class Geometry:
    """A third-party plugin with two kinds of its own: `point` read from text, `blob` handed over by path."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @hookimpl
    def register_input_kinds(self, register: Any) -> None:
        def is_point(value: Any) -> bool:
            return isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)

        register("point", "a list of two numbers", is_point, is_point, read=read_point, parse=parse_point)
        register("blob", "a path or bytes", lambda v: isinstance(v, (str, bytes)), by_path=True)

    @hookimpl
    def register_stages(self, register: Any) -> None:
        register("geo.norm", lambda items, params, ctx: [(x * x + y * y) ** 0.5 for x, y in items])
        register("geo.size", lambda items, params, ctx: [size_of(v) for v in items])

    @hookimpl
    def register_manifest_dirs(self, register: Any) -> None:
        register(self.folder)


def test_a_plugin_input_kind_reads_cli_inputs_and_job_files_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_manifest(tmp_path / "m", "norm", POINT_TASK)
    write_manifest(tmp_path / "m", "blob-size", SIZE_TASK)
    points = tmp_path / "points"
    points.mkdir()
    (points / "a.pt").write_text("3 4")
    (points / "b.pt").write_text("6 8\n")
    (points / "c.pt").write_text("six eight")
    with installed(Geometry(tmp_path / "m"), "geometry"):
        assert main(["run", "norm", "5 12", str(points / "a.pt"), "--json"]) == 0
        assert capsys.readouterr().out.split() == ["13.0", "5.0"]
        assert main(["run", "norm", str(points / "c.pt")]) == 1
        assert capsys.readouterr().err == "error: 'six eight' is not a point; expected two numbers such as '3 4'\n"

        summary = taskhub.run_job(write_job(tmp_path, task="norm", model=None, inputs={"files": "points/*.pt"}))
        assert (summary["done"], summary["failed"]) == (2, 1)
        records = {r["id"]: r for r in read_records(tmp_path / "out.jsonl")}
        assert records["a.pt"]["output"] == 5.0 and records["b.pt"]["output"] == 10.0
        assert records["c.pt"]["error"]["message"] == "'six eight' is not a point; expected two numbers such as '3 4'"

        # a by_path kind: files go to the stage as paths, stdin as bytes, literal text is refused
        assert main(["run", "blob-size", str(points / "b.pt"), "--json"]) == 0
        assert capsys.readouterr().out.split() == ["4"]
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"12345")))
        assert main(["run", "blob-size", "-", "--json"]) == 0
        assert capsys.readouterr().out.split() == ["5"]
        assert main(["run", "blob-size", "no such blob"]) == 1
        expected = "error: 'no such blob' is not a file; expected a path to an blob file (or - for stdin).\n"
        assert capsys.readouterr().err == expected
        (tmp_path / "blobs.jsonl").write_text('{"id": "x", "blob": "points/a.pt"}\n')
        job = write_job(
            tmp_path,
            "sizes",
            task="blob-size",
            model=None,
            output="sizes.jsonl",
            inputs={"jsonl": "blobs.jsonl", "field": "blob", "id_field": "id"},
        )
        monkeypatch.chdir(points)  # a record's relative path starts at the manifest's folder, not here
        taskhub.run_job(job)
        assert read_records(tmp_path / "sizes.jsonl")[0]["output"] == 3


def test_an_input_kind_with_a_read_that_is_not_callable_fails_its_plugin(tmp_path: Path) -> None:
    class Broken:
        @hookimpl
        def register_input_kinds(self, register: Any) -> None:
            register("lumps", "lumps", read=42)

    with installed(Broken(), "broken"), pytest.warns(UserWarning, match="skipping plugin 'broken'"):
        statuses = {s.name: s for s in taskhub.plugin_statuses()}
        assert not statuses["broken"].ok
        assert "input kind 'lumps': read and parse must be functions" in (statuses["broken"].error or "")


def test_the_server_counts_a_chat_conversation_as_one_input(decoding_model_dirs, decoding_models) -> None:  # noqa: F811
    from test_serve_tasks import post

    from taskhub.serve import ServedModel, ServeSettings

    model, tokenizer = decoding_models["llama"]
    reply = chat_reply(model, tokenizer, CHAT)
    settings = ServeSettings(models=(ServedModel("text-generation", str(decoding_model_dirs["llama"])),))
    with running_server(settings) as server:
        body = {"inputs": CHAT, "parameters": {"max_new_tokens": 8, "return_full_text": False}}
        status, answer = post(server, "/v1/tasks/text-generation", body)
        assert status == 200 and answer["outputs"] == [{"generated_text": reply}]
        status, answer = post(server, "/v1/tasks/text-generation", {**body, "inputs": [CHAT, CHAT]})
        assert status == 200 and answer["outputs"] == [[{"generated_text": reply}]] * 2
