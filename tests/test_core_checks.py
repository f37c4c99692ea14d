"""Devices, error positions, the model cache and the safety flags: checked by the core, for every plugin."""

from __future__ import annotations

import fnmatch
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fake_plugins import installed, write_manifest
from fixtures_batch import write_job, write_texts
from fixtures_text import text_models  # noqa: F401

import taskhub
from taskhub import BadInputError, ModelNotAvailableError, ModelSource, ParamError, hookimpl
from taskhub.cli import main
from taskhub.models import cache_limit, hub_patterns, model_cache

MODELLED = """\
task: probe
modality: text
input: text
model: {{default: {model}, loader: probe.loader}}
model_stage: {{stage: probe.check}}
"""


def check(items: list[Any], params: Any, ctx: Any) -> list[Any]:
    """Fails items equal to "bad", naming them by their index in this batch."""
    for index, item in enumerate(items):
        if item == "bad":
            raise BadInputError(f"Input {index} is bad; expected anything else.")
    return [{"item": item, "model": ctx.model["id"]} for item in items]


class ProbePlugin:
    """A loader that records what it was given and sleeps, and a stage that fails on "bad"."""

    def __init__(self, folder: Path, model: str = "probe-model", delay: float = 0.0) -> None:
        write_manifest(folder, "probe", MODELLED.format(model=model))
        self.folder, self.delay = folder, delay
        self.sources: list[ModelSource] = []
        self.loading: list[tuple[str, float, float]] = []

    @hookimpl
    def register_stages(self, register: Any) -> None:
        register("probe.check", check)

    @hookimpl
    def register_model_loaders(self, register: Any) -> None:
        def load(source: ModelSource) -> dict[str, Any]:
            start = time.monotonic()
            time.sleep(self.delay)
            self.sources.append(source)
            self.loading.append((source.model_id, start, time.monotonic()))
            return {"id": source.model_id, "weights": torch.zeros(1000)}

        register("probe.loader", load)

    @hookimpl
    def register_manifest_dirs(self, register: Any) -> None:
        register(self.folder)


@pytest.fixture
def probe(tmp_path, fresh_caches):
    (tmp_path / "m1").mkdir()
    plugin = ProbePlugin(tmp_path / "manifests", model=str(tmp_path / "m1"))
    with installed(plugin, "probe"):
        yield plugin


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_clear_error(probe, capsys):
    with pytest.raises(ParamError, match="'cuda' is not available on this machine"):
        taskhub.pipeline("probe", device="cuda")
    assert main(["run", "feature-extraction", "x", "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not available on this machine" in err


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_device_names_what_is_allowed(probe, device):
    with pytest.raises(ParamError, match="Expected one of: cpu, cuda, mps"):
        taskhub.pipeline("probe", device=device)


def test_device_index_beyond_the_machine(probe):
    count = torch.cuda.device_count()
    with pytest.raises(ParamError, match="cuda:7"):
        taskhub.pipeline("probe", device=f"cuda:{max(count, 7)}")


def test_stage_errors_name_the_position_in_the_call(probe):
    pipe = taskhub.pipeline("probe", device="cpu")
    inputs = ["a", "b", "c", "d", "bad"]
    with pytest.raises(BadInputError, match=r"^Input 4 is bad"):
        pipe(inputs, batch_size=2)  # "bad" is item 0 of the third batch
    with pytest.raises(BadInputError, match=r"^Input 2 is bad"):
        pipe(["a", "b", "bad"], batch_size=1)
    with pytest.raises(BadInputError, match=r"^Input 17 is bad"):
        pipe.run_items(["bad"], positions=[17])


def test_model_cache_lru_by_count(tmp_path, probe, monkeypatch):
    monkeypatch.setenv("TASKHUB_MODEL_CACHE", "2")
    dirs = []
    for name in ("m2", "m3"):
        (tmp_path / name).mkdir()
        dirs.append(str(tmp_path / name))
    first = str(tmp_path / "m1")
    for model in (first, dirs[0], first, dirs[1]):  # m1 used again before m3 loads: m2 is the least recent
        taskhub.run_task("probe", "x", model=model, device="cpu")
    assert [key[0] for key in model_cache.keys()] == [first, dirs[1]]
    assert [s.model_id for s in probe.sources] == [first, dirs[0], dirs[1]]
    taskhub.run_task("probe", "x", model=dirs[0], device="cpu")  # evicted: loads again
    assert [s.model_id for s in probe.sources][-1] == dirs[0]
    taskhub.clear_cache()
    assert model_cache.keys() == []


def test_model_cache_lru_by_bytes(tmp_path, probe, monkeypatch):
    monkeypatch.setenv("TASKHUB_MODEL_CACHE", "5KB")  # each probe model holds 4,000 bytes of tensors
    assert cache_limit("5KB") == (None, 5000) and cache_limit("1GiB") == (None, 2**30)
    (tmp_path / "m2").mkdir()
    taskhub.run_task("probe", "x", model=str(tmp_path / "m1"), device="cpu")
    taskhub.run_task("probe", "x", model=str(tmp_path / "m2"), device="cpu")
    assert [key[0] for key in model_cache.keys()] == [str(tmp_path / "m2")]


def test_bad_cache_setting_is_a_param_error(probe, monkeypatch):
    monkeypatch.setenv("TASKHUB_MODEL_CACHE", "lots")
    with pytest.raises(ParamError, match="TASKHUB_MODEL_CACHE"):
        taskhub.pipeline("probe", device="cpu")


def test_two_models_load_in_parallel_one_model_loads_once(tmp_path, fresh_caches):
    (tmp_path / "m1").mkdir()
    (tmp_path / "m2").mkdir()
    plugin = ProbePlugin(tmp_path / "manifests", model=str(tmp_path / "m1"), delay=0.5)
    with installed(plugin, "probe"):
        models = [str(tmp_path / "m1"), str(tmp_path / "m2"), str(tmp_path / "m1")]
        threads = [
            threading.Thread(target=taskhub.pipeline, args=("probe", m), kwargs={"device": "cpu"}) for m in models
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(m for m, _, _ in plugin.loading) == sorted(models[:2])  # m1 once
    (_, start_a, end_a), (_, start_b, end_b) = plugin.loading
    assert start_b < end_a and start_a < end_b  # the two loads overlapped in time


def test_safety_flags_reach_the_loader(probe):
    taskhub.run_task("probe", "x", device="cpu")
    taskhub.run_task("probe", "x", device="cpu", trust_remote_code=True, allow_pickle=True)
    flags = [(s.trust_remote_code, s.allow_pickle) for s in probe.sources]
    assert flags == [(False, False), (True, True)]
    assert probe.sources[0].from_pretrained_kwargs() == {"trust_remote_code": False, "use_safetensors": True}
    assert probe.sources[1].from_pretrained_kwargs(weights=False) == {"trust_remote_code": True}


def test_pickle_weights_need_allow_pickle_everywhere(tmp_path, text_models, capsys):
    """A checkpoint with only pytorch_model.bin: refused by default, loaded when the caller opts in."""
    from transformers import AutoModel, AutoTokenizer

    pickled = tmp_path / "pickled"
    model = AutoModel.from_pretrained(text_models["encoder"])
    model.config.save_pretrained(pickled)
    AutoTokenizer.from_pretrained(text_models["encoder"]).save_pretrained(pickled)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelNotAvailableError):
        taskhub.run_task("feature-extraction", "hello", model=str(pickled), device="cpu")
    reference = taskhub.run_task("feature-extraction", "hello", model=str(text_models["encoder"]), device="cpu")
    got = taskhub.run_task("feature-extraction", "hello", model=str(pickled), device="cpu", allow_pickle=True)
    assert got == pytest.approx(reference, abs=1e-6)
    assert main(["run", "feature-extraction", "hello", "--model", str(pickled), "--device", "cpu"]) == 1
    assert main(["run", "feature-extraction", "hello", "--model", str(pickled), "--allow-pickle", "--json"]) == 0
    # a job manifest opts in with allow_pickle: true; its relative model path starts at the manifest's folder
    folder = tmp_path / "job"
    write_texts(folder / "in", 2)
    (folder / "models").mkdir()
    (folder / "models" / "pickled").symlink_to(pickled)
    job = write_job(folder, inputs={"files": "in/*.txt"}, model="./models/pickled", device="cpu")
    with pytest.raises(ModelNotAvailableError, match=str(folder / "models" / "pickled")):
        taskhub.run_job(job, quiet=True)
    job.write_text(job.read_text() + "allow_pickle: true\n")
    summary = taskhub.run_job(job, quiet=True, resume=False)
    assert summary["done"] == 2 and summary["failed"] == 0


def test_hub_downloads_only_the_files_the_loader_reads():
    from huggingface_hub.utils import filter_repo_objects

    repo = [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "spiece.model",
        "chat_template.jinja",
        "model.safetensors",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "tf_model.h5",
        "flax_model.msgpack",
        "onnx/model.onnx",
        "model.gguf",
        "openvino/openvino_model.bin",
        "openvino/openvino_model.xml",
        "modeling_custom.py",
    ]

    def fetched(**flags: bool) -> set[str]:
        return set(filter_repo_objects(repo, allow_patterns=hub_patterns(**flags)))

    weights = {"model.safetensors", "model-00001-of-00002.safetensors"}
    default = fetched(allow_pickle=False, trust_remote_code=False)
    assert weights <= default and {"config.json", "tokenizer.json", "spiece.model", "chat_template.jinja"} <= default
    never = {"tf_model.h5", "flax_model.msgpack", "onnx/model.onnx", "model.gguf", "openvino/openvino_model.xml"}
    assert not default & (never | {"pytorch_model.bin", "modeling_custom.py", "openvino/openvino_model.bin"})
    opted = fetched(allow_pickle=True, trust_remote_code=True)
    assert {"pytorch_model.bin", "modeling_custom.py"} <= opted and not opted & never
    assert not fnmatch.filter(opted, "openvino/*.bin")


def explode(items: list[Any], params: Any, ctx: Any) -> list[Any]:
    return [1 / 0 for _ in items]


class Faulty:
    """A stage with a bug and a loader whose library raises something that is not OSError."""

    def __init__(self, folder: Path) -> None:
        write_manifest(folder, "faulty", MODELLED.format(model=folder).replace("probe", "faulty"))
        write_manifest(
            folder, "buggy", "task: buggy\nmodality: text\ninput: text\nmodel_stage: {stage: faulty.check}\n"
        )
        self.folder = folder

    @hookimpl
    def register_stages(self, register: Any) -> None:
        register("faulty.check", explode)

    @hookimpl
    def register_model_loaders(self, register: Any) -> None:
        def load(source: ModelSource) -> Any:
            raise RuntimeError("size mismatch for encoder.weight")

        register("faulty.loader", load)

    @hookimpl
    def register_manifest_dirs(self, register: Any) -> None:
        register(self.folder)


def test_unexpected_failures_are_still_taskhub_errors(tmp_path, fresh_caches):
    with installed(Faulty(tmp_path), "faulty"):
        with pytest.raises(taskhub.StageError, match="stage 'faulty.check' failed: ZeroDivisionError") as err:
            taskhub.run_task("buggy", "x")
        assert isinstance(err.value.__cause__, ZeroDivisionError)
        with pytest.raises(ModelNotAvailableError, match="RuntimeError: size mismatch"):
            taskhub.run_task("faulty", "x", device="cpu")


def test_text_with_an_unpaired_surrogate_is_a_bad_input_naming_it(probe):
    with pytest.raises(BadInputError, match=r"^Input 1 is not valid Unicode \(an unpaired surrogate at character 2\)"):
        taskhub.run_task("probe", ["fine", "ab\ud800c"])


def test_cli_output_folder_is_checked_before_the_model_loads_and_json_results_say_so(probe, tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "speech.wav"
    assert main(["run", "probe", "x", "--output", str(missing)]) == 1
    assert (
        capsys.readouterr().err
        == f"error: --output {missing}: its folder does not exist; create it or choose another path.\n"
    )
    assert probe.sources == []  # refused before any model loaded
    assert main(["run", "probe", "x", "y", "--json", "--output", str(tmp_path / "r.wav")]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["item"] for line in out.splitlines()] == ["x", "y"]
    assert err == "warning: --output saves file-like results only; 'probe' gives JSON, printed here.\n"


@pytest.mark.parametrize(
    "value, problem",
    [("[" * 1200, "RecursionError"), ("9" * 5000, "ValueError: Exceeds the limit (4300 digits)")],
    ids=["deep", "huge-int"],
)
def test_cli_param_values_python_cannot_hold_are_param_errors(probe, tmp_path, capsys, value, problem):
    (tmp_path / "value.json").write_text(value)
    for given, where in (
        (value, "--param v"),
        (f"@{tmp_path / 'value.json'}", f"--param v=@{tmp_path / 'value.json'}"),
    ):
        assert main(["run", "probe", "x", "--param", f"v={given}"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {where}: value not usable ({problem}") and err.count("\n") == 1


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"task": None}, taskhub.UnknownTaskError, "A task is named by a string, got None"),
        ({"model": 5}, ParamError, "model must be a hub id or a folder path, got int 5"),
        ({"revision": 5}, ParamError, "revision must be a string"),
        ({"dtype": 5}, ParamError, "Unknown dtype 5"),
        ({"trust_remote_code": "false"}, ParamError, "trust_remote_code must be True or False, got 'false'"),
        ({"allow_pickle": 1}, ParamError, "allow_pickle must be True or False, got 1"),
    ],
    ids=["task", "model", "revision", "dtype", "trust_remote_code", "allow_pickle"],
)
def test_arguments_of_the_wrong_type_are_param_errors_before_any_load(probe, kwargs, error, message):
    call = {"task": "probe", "inputs": "x", **kwargs}
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        taskhub.run_task(**call)
    assert probe.sources == []  # nothing was loaded, and a truthy string never reached a loader as a yes
