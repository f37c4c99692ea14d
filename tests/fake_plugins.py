"""Small in-test plugins: registered in fixtures, unregistered in `finally`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

import taskhub
from taskhub import hookimpl


class UpperParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suffix: str = ""


def upper(items: list[Any], params: UpperParams, ctx: Any) -> list[Any]:
    return [item.upper() + params.suffix for item in items]


class RepeatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    times: int = 1


def repeat(items: list[Any], params: RepeatParams, ctx: Any) -> list[Any]:
    return [{"text": item * params.times, "length": len(item)} for item in items]


def write_manifest(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(body)
    return path


SHOUT = """\
task: shout
aliases: [yell]
modality: text
input: text
preprocess:
  - stage: fake.upper
model_stage:
  stage: fake.repeat
"""


class FakePlugin:
    """A plugin object with stages and a manifest folder."""

    def __init__(self, manifest_dir: Path, stage_prefix: str = "fake") -> None:
        self.manifest_dir = manifest_dir
        self.prefix = stage_prefix

    @hookimpl
    def register_stages(self, register: Any) -> None:
        register(f"{self.prefix}.upper", upper, UpperParams)
        register(f"{self.prefix}.repeat", repeat, RepeatParams)

    @hookimpl
    def register_manifest_dirs(self, register: Any) -> None:
        register(self.manifest_dir)


ODD_TASK = """
task: odd-results
modality: text
input: text
model_stage: {stage: odd.results}
"""

ODD_RESULTS = {"nan": float("nan"), "inf": float("-inf"), "bytes": b"\x00", "set": {1}, "object": object()}


class OddResults:
    """A plugin whose stage returns, for some inputs, results that JSON cannot hold."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @hookimpl
    def register_stages(self, register: Any) -> None:
        register("odd.results", lambda items, params, ctx: [ODD_RESULTS.get(x, x.upper()) for x in items])

    @hookimpl
    def register_manifest_dirs(self, register: Any) -> None:
        register(self.folder)


@contextmanager
def installed(plugin: Any, name: str) -> Iterator[None]:
    taskhub.register_plugin(plugin, name)
    try:
        yield
    finally:
        taskhub.unregister_plugin(name)
        taskhub.clear_caches()
