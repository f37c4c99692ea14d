"""What plugins registered: stages, model loaders, tasks, local models, batch readers and writers."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from .errors import PluginError, UnknownStageError, UnknownTaskError, did_you_mean
from .manifest import TaskManifest

T = TypeVar("T")


class NoParams(BaseModel):
    """Params model of a stage that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class StageSpec:
    """A registered stage: its function, params model and owning plugin."""

    name: str
    func: Callable[..., list[Any]]
    params_model: type[BaseModel]
    plugin: str


@dataclass(frozen=True)
class CommandSpec:
    """A CLI subcommand a plugin registered: `configure(parser)` adds its arguments, `run(args)` runs it."""

    name: str
    configure: Callable[[Any], None]
    run: Callable[[Any], int]
    help: str = ""


@dataclass(frozen=True)
class Owned(Generic[T]):
    """Any registered value together with the plugin that registered it."""

    value: T
    plugin: str


@dataclass(frozen=True)
class TaskEntry:
    """A task manifest and where it came from."""

    manifest: TaskManifest
    path: Path
    plugin: str


@dataclass
class Table(Generic[T]):
    """Name -> owned value; a second owner of one name is an error naming both."""

    what: str
    items: dict[str, Owned[T]] = field(default_factory=dict)

    def add(self, name: str, value: T, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.what} with an invalid name {name!r}")
        if name in self.items:
            other = self.items[name].plugin
            raise PluginError(f"{self.what} {name!r} is registered by both plugin {other!r} and plugin {plugin!r}")
        self.items[name] = Owned(value, plugin)

    def get(self, name: str) -> T:
        if name not in self.items:
            raise UnknownStageError(did_you_mean(name, self.items, self.what))
        return self.items[name].value

    def __contains__(self, name: object) -> bool:
        return name in self.items


@dataclass
class Registry:
    """Everything the loaded plugins provide; built by `taskhub.plugins`."""

    stages: Table[StageSpec] = field(default_factory=lambda: Table("stage"))
    loaders: Table[Callable[..., Any]] = field(default_factory=lambda: Table("model loader"))
    local_models: Table[Path] = field(default_factory=lambda: Table("local model"))
    readers: Table[Callable[..., Any]] = field(default_factory=lambda: Table("batch reader"))
    writers: Table[Callable[..., Any]] = field(default_factory=lambda: Table("batch writer"))
    commands: Table[CommandSpec] = field(default_factory=lambda: Table("command"))
    manifest_dirs: list[Owned[Path]] = field(default_factory=list)
    _tasks: dict[str, TaskEntry] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def add_stage(
        self, plugin: str, name: str, func: Callable[..., list[Any]], params_model: type[BaseModel] | None = None
    ) -> None:
        if not callable(func):
            raise PluginError(f"plugin {plugin!r} registered stage {name!r} with a non-callable {func!r}")
        model = params_model or NoParams
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise PluginError(f"stage {name!r} of plugin {plugin!r}: params_model must be a pydantic BaseModel class")
        self.stages.add(name, StageSpec(name, func, model, plugin), plugin)

    def add_task(self, entry: TaskEntry) -> None:
        """Add a task; a name or alias another task already uses is an error naming both."""
        for name in [entry.manifest.task, *entry.manifest.aliases]:
            owner = self._aliases.get(name)
            if owner is not None:
                first = self._tasks[owner]
                raise PluginError(
                    f"task name {name!r} is claimed by both {first.path} (plugin {first.plugin!r}) "
                    f"and {entry.path} (plugin {entry.plugin!r})"
                )
            self._aliases[name] = entry.manifest.task
        self._tasks[entry.manifest.task] = entry

    def task(self, name: str) -> tuple[TaskEntry, dict[str, str]]:
        """The task called `name` (or an alias, or matching a task's `name_pattern`), and the
        params that the pattern's named groups give (``translation_en_to_de`` -> src/tgt)."""
        canonical = self._aliases.get(name)
        if canonical is not None:
            return self._tasks[canonical], {}
        for entry in self._tasks.values():
            pattern = entry.manifest.name_pattern
            match = re.fullmatch(pattern, name) if pattern else None
            if match:
                return entry, {k: v for k, v in match.groupdict().items() if v is not None}
        raise UnknownTaskError(did_you_mean(name, self._aliases, "task"))

    def tasks(self) -> list[TaskEntry]:
        return [self._tasks[name] for name in sorted(self._tasks)]
