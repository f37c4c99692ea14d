"""The plugin contract as docs/plugins.md and the README state it: a plugin written from the docs
(own loader, lazy stages, batch reader), conflicts, dependencies, `taskhub stages`, cheap imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from fake_plugins import SHOUT, FakePlugin, installed, write_manifest

import taskhub
from taskhub import hookimpl
from taskhub.cli import main
from taskhub.plugins import PluginHost

ROOT = Path(__file__).resolve().parents[1]

# A plugin package written from docs/plugins.md alone: "module:name" references everywhere, its
# own model loader (a word list read from the model directory), two stages and a batch reader.
PLUGIN = '''
"""Counts how many words of each text are in a vocabulary the model directory holds."""
from taskhub import hookimpl

@hookimpl
def register_stages(register):
    register("vocab.split", "{pkg}.stages:split")
    register("vocab.count", "{pkg}.stages:count", "{pkg}.stages:CountParams")

@hookimpl
def register_model_loaders(register):
    register("vocab.words", "{pkg}.stages:load_words")

@hookimpl
def register_batch_readers(register):
    register("lines", "{pkg}.stages:read_lines")

@hookimpl
def register_manifest_dirs(register):
    from pathlib import Path
    register(Path(__file__).parent / "manifests")
'''
STAGES = '''
from pathlib import Path
from pydantic import BaseModel, ConfigDict
from taskhub import BadInputError, Item, ModelSource

LOADS = []

class CountParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lowercase: bool = True

def load_words(source: ModelSource) -> frozenset:
    LOADS.append(source)
    return frozenset((source.path / "words.txt").read_text().split())

def split(items, params, ctx):
    """Split each text into words."""
    for index, text in enumerate(items):
        if not text.strip():
            raise BadInputError(f"Input {{index}} is empty; expected some words.")
    return [text.split() for text in items]

def count(items, params, ctx):
    """Words found in the vocabulary."""
    return [{{"known": sum((w.lower() if params.lowercase else w) in ctx.model for w in words)}} for words in items]

def read_lines(location, inputs):
    for number, line in enumerate(Path(location).read_text().splitlines(), 1):
        yield Item(id=number, ref=f"{{location}}:{{number}}", value=line)
'''
MANIFEST = """
task: vocab-count
modality: text
input: text
model: {default: ./vocab-model, loader: vocab.words}
preprocess: [{stage: vocab.split}]
model_stage: {stage: vocab.count}
"""


@pytest.fixture
def docs_plugin(tmp_path, monkeypatch):
    pkg = "vocab_plugin_from_docs"
    folder = tmp_path / pkg
    (folder / "manifests").mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "plugin.py").write_text(PLUGIN.format(pkg=pkg))
    (folder / "stages.py").write_text(STAGES.format(pkg=pkg))
    (folder / "manifests" / "vocab-count.yaml").write_text(MANIFEST)
    model = tmp_path / "vocab-model"
    model.mkdir()
    (model / "words.txt").write_text("river lamp bread\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import importlib

    module = importlib.import_module(f"{pkg}.plugin")
    with installed(module, "vocab"):
        yield tmp_path, pkg
    for name in [m for m in sys.modules if m.startswith(pkg)]:
        del sys.modules[name]


def test_plugin_written_from_the_docs_runs_tasks_and_jobs(docs_plugin):
    tmp_path, pkg = docs_plugin
    assert f"{pkg}.stages" not in sys.modules  # registered by reference: nothing imported yet
    assert taskhub.run_task("vocab-count", "River and lamp and sea") == {"known": 2}
    assert taskhub.run_task("vocab-count", ["River", "x"], lowercase=False) == [{"known": 0}, {"known": 0}]
    with pytest.raises(taskhub.BadInputError, match="^Input 2 is empty"):
        taskhub.run_task("vocab-count", ["a", "b", " "])
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "notes.txt").write_text("bread and lamp\nnothing here\n")
    (tmp_path / "job" / "job.yaml").write_text(
        "job: count-notes\ntask: vocab-count\nmodel: ../vocab-model\n"
        "inputs: {reader: lines, path: notes.txt}\noutput: out.jsonl\n"
    )
    summary = taskhub.run_job(tmp_path / "job" / "job.yaml", quiet=True)
    assert summary["done"] == 2 and summary["failed"] == 0
    records = [json.loads(line) for line in (tmp_path / "job" / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["output"]) for r in records] == [(1, {"known": 2}), (2, {"known": 0})]


def test_stages_command_lists_params_from_the_pydantic_model(docs_plugin, capsys):
    _, pkg = docs_plugin
    assert main(["stages", "--json"]) == 0
    rows = {row["stage"]: row for row in json.loads(capsys.readouterr().out)}
    count = rows["vocab.count"]
    assert count["plugin"] == "vocab" and count["doc"] == "Words found in the vocabulary."
    assert [(p["name"], p["type"], p["default"]) for p in count["params"]] == [("lowercase", "boolean", True)]
    assert rows["vocab.split"]["params"] == []
    tokenize = rows["text.tokenize"]
    from taskhub_text.tokenize import TokenizeParams

    assert [p["name"] for p in tokenize["params"]] == list(TokenizeParams.model_fields)
    assert main(["tasks", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"vocab-count\n.*\n\s+- vocab.split\n\s+- vocab.count\n", out)


def test_readme_plugin_snippet_runs_as_written(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Writing a plugin") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    manifest = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    package = tmp_path / "taskhub_keywords"
    (package / "manifests").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text(code)
    (package / "manifests" / "keyword-extraction.yaml").write_text(manifest)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    for name in [m for m in sys.modules if m.startswith("taskhub_keywords")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        module = importlib.import_module("taskhub_keywords.plugin")
        text = "a quick experiment with longer words"
        with installed(module, "readme-keywords"):
            got = taskhub.run_task("keyword-extraction", text, top_n=2)
    finally:  # the snippet's package must not shadow the installed example plugin in later tests
        for name in [m for m in sys.modules if m.startswith("taskhub_keywords")]:
            del sys.modules[name]
    assert sorted(got, key=len, reverse=True) == sorted(text.split(), key=len, reverse=True)[:2]


def test_conflicting_task_names_fail_the_later_plugin_whatever_the_order(tmp_path):
    for order in (("zeta", "alpha"), ("alpha", "zeta")):
        host = PluginHost()
        host._entry_points_loaded = True
        for name in order:
            write_manifest(tmp_path / name, "shout", SHOUT.replace("fake.", f"{name}."))
            host.add(FakePlugin(tmp_path / name, name), name)
        with pytest.warns(UserWarning, match="'shout' is claimed by both"):
            registry = host.registry()
        assert registry.task("shout")[0].plugin == "alpha"
        assert not host.statuses["zeta"].ok and "alpha" in host.statuses["zeta"].error
        assert "zeta.upper" not in registry.stages


class Broken:
    @hookimpl
    def register_stages(self, register):
        raise RuntimeError("base exploded")


class Dependent(FakePlugin):
    TASKHUB_REQUIRES = ("base",)


def test_a_failed_dependency_disables_exactly_its_dependents(tmp_path):
    write_manifest(tmp_path / "dep", "shout", SHOUT.replace("fake.", "dep."))
    host = PluginHost()
    host._entry_points_loaded = True
    host.add(Dependent(tmp_path / "dep", "dep"), "dependent")  # added first: still waits for base
    host.add(Broken(), "base")
    host.add(FakePlugin(tmp_path / "other", "other"), "other")
    with pytest.warns(UserWarning):
        registry = host.registry()
    statuses = host.statuses
    assert not statuses["base"].ok and "base exploded" in statuses["base"].error
    assert not statuses["dependent"].ok
    assert statuses["dependent"].error.startswith("requires plugin 'base', which failed: RuntimeError: base exploded")
    assert statuses["other"].ok and "other.upper" in registry.stages
    assert "dep.upper" not in registry.stages
    with pytest.raises(taskhub.UnknownTaskError):
        registry.task("shout")


def test_cli_prints_failed_plugins_even_when_warnings_are_ignored(capsys):
    with installed(Broken(), "base"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(["tasks"]) == 0
    err = capsys.readouterr().err
    assert "warning: plugin 'base' is unavailable: RuntimeError: base exploded" in err


@pytest.mark.slow  # a fresh interpreter per case
@pytest.mark.parametrize(
    "code",
    [
        "import taskhub",
        "import taskhub.cli as c; c.build_parser()",
        "from taskhub.cli import main; main(['tasks'])",
        "from taskhub.cli import main; main(['plugins'])",
        "from taskhub.cli import main; main(['stages', '--json'])",
        # every params model of every built-in stage gets imported and checked, none of them imports torch
        "import glob; from taskhub.cli import main; "
        "assert main(['manifest', 'validate', *glob.glob('manifests/tasks/*/*.yaml'), "
        "*glob.glob('manifests/jobs/*.yaml')]) == 0; "
        "assert all(f'taskhub_{p}.params' in sys.modules for p in "
        "('text', 'vision', 'audio', 'multimodal', 'rag', 'textgen'))",
    ],
)
def test_cheap_commands_import_neither_torch_nor_transformers(code):
    probe = textwrap.dedent(f"""
        import sys, contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):
            {code}
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


POINT_TASK = """
task: norm
modality: geometry
input: point
model_stage: {stage: geo.norm}
"""


class Geometry:
    """A plugin bringing its own input kind: a point is a list of two numbers (one input, not many)."""

    def __init__(self, folder):
        self.folder = folder

    @hookimpl
    def register_input_kinds(self, register):
        def is_point(value):
            return isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)

        register("point", "a list of two numbers", is_point, is_point)

    @hookimpl
    def register_stages(self, register):
        register("geo.norm", lambda items, params, ctx: [(x * x + y * y) ** 0.5 for x, y in items])

    @hookimpl
    def register_manifest_dirs(self, register):
        register(self.folder)


def test_a_plugin_registers_its_own_input_kind(tmp_path):
    write_manifest(tmp_path, "norm", POINT_TASK)
    write_manifest(tmp_path / "bad", "nope", POINT_TASK.replace("point", "poynt").replace("norm", "nope"))
    with installed(Geometry(tmp_path), "geometry"):
        assert taskhub.run_task("norm", [3, 4]) == 5.0  # one point
        assert taskhub.run_task("norm", [[3, 4], [6, 8]]) == [5.0, 10.0]  # a list of points
        with pytest.raises(taskhub.BadInputError, match=r"^Input 1 is a str; expected a list of two numbers"):
            taskhub.run_task("norm", [[3, 4], "x"])
    with installed(Geometry(tmp_path / "bad"), "geometry-bad"):
        with pytest.warns(UserWarning, match="Unknown input kind 'poynt'"):
            taskhub.get_registry()


def save_text(result, path):
    path.write_text(result["text"])
    return path


class ShoutToFiles(FakePlugin):
    @hookimpl
    def register_result_writers(self, register):
        register("fake.text_file", lambda result: isinstance(result, dict) and "text" in result, save_text)


def test_a_plugin_registers_how_the_cli_saves_its_results(tmp_path, capsys):
    write_manifest(tmp_path / "m", "shout", SHOUT)
    with installed(ShoutToFiles(tmp_path / "m"), "fake"):
        assert main(["run", "shout", "ab", "ab", "--output", str(tmp_path / "out.txt")]) == 0
        assert main(["run", "shout", "xy", "--json"]) == 0  # no --output: JSON as usual
    assert (tmp_path / "out-0.txt").read_text() == "AB" and (tmp_path / "out-1.txt").read_text() == "AB"
    out, err = capsys.readouterr()
    assert f"wrote {tmp_path / 'out-0.txt'}" in err and json.loads(out) == {"text": "XY", "length": 2}
