"""What plugins registered: stages, model loaders, tasks, local models, batch readers and writers."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from . import lazy
from .errors import PluginError, UnknownStageError, UnknownTaskError, did_you_mean
from .input_kinds import InputKind, core_kinds
from .manifest import TaskManifest

T = TypeVar("T")


class NoParams(BaseModel):
    """Params model of a stage that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class StageSpec:
    """A registered stage: its function, params model and owning plugin. The function and the
    params model may be given as "module:name" references, imported when first used."""

    name: str
    target: Callable[..., list[Any]] | str
    params_target: type[BaseModel] | str
    plugin: str

    @property
    def func(self) -> Callable[..., list[Any]]:
        func = lazy.resolve(self.target)
        if not callable(func):
            raise PluginError(f"stage {self.name!r} of plugin {self.plugin!r}: {self.target!r} is not callable")
        return func

    @property
    def params_model(self) -> type[BaseModel]:
        model = lazy.resolve(self.params_target)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise PluginError(
                f"stage {self.name!r} of plugin {self.plugin!r}: params_model must be a pydantic BaseModel class"
            )
        return model

    @property
    def params_loaded(self) -> bool:
        """False while the params model is a reference not imported yet."""
        return lazy.is_resolved(self.params_target)

    @property
    def doc(self) -> str:
        """The stage function's docstring (what `taskhub stages` shows), without importing it."""
        return lazy.docstring(self.target)


@dataclass(frozen=True)
class CommandSpec:
    """A CLI subcommand a plugin registered: `configure(parser)` adds its arguments, `run(args)` runs it."""

    name: str
    configure: Callable[[Any], None]
    run: Callable[[Any], int]
    help: str = ""


@dataclass(frozen=True)
class ResultWriter:
    """Saves results that are files (audio, images) for `taskhub run --output`."""

    name: str
    accepts: Callable[[Any], bool]
    write: Callable[[Any, Path], Path] | str  # or a "module:function" reference


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
        value: T = lazy.resolve(self.items[name].value)  # a "module:name" reference is imported now
        return value

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
    input_kinds: Table[InputKind] = field(default_factory=lambda: Table("input kind"))
    result_writers: Table[ResultWriter] = field(default_factory=lambda: Table("result writer"))
    manifest_dirs: list[Owned[Path]] = field(default_factory=list)
    _tasks: dict[str, TaskEntry] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in core_kinds():
            self.input_kinds.add(kind.name, kind, "taskhub")

    def add_stage(
        self,
        plugin: str,
        name: str,
        func: Callable[..., list[Any]] | str,
        params_model: type[BaseModel] | str | None = None,
    ) -> None:
        if not (callable(func) or lazy.is_ref(func)):
            raise PluginError(
                f"plugin {plugin!r} registered stage {name!r} with {func!r}: expected a function or 'module:function'"
            )
        model = params_model or NoParams
        if not (lazy.is_ref(model) or (isinstance(model, type) and issubclass(model, BaseModel))):
            raise PluginError(f"stage {name!r} of plugin {plugin!r}: params_model must be a pydantic BaseModel class")
        self.stages.add(name, StageSpec(name, func, model, plugin), plugin)

    def add_input_kind(
        self,
        plugin: str,
        kind: str,
        expected: str,
        check: Callable[[Any], bool] | None = None,
        one_list: Callable[[Any], bool] | None = None,
        *,
        read: Callable[[bytes, str], Any] | str | None = None,
        parse: Callable[[str], Any] | str | None = None,
        by_path: bool = False,
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", str(kind)):
            raise PluginError(f"plugin {plugin!r} registered an input kind with an invalid name {kind!r}")
        if not all(f is None or callable(f) for f in (check, one_list)):
            raise PluginError(f"plugin {plugin!r}: input kind {kind!r}: check and one_list must be functions or None")
        if not all(f is None or callable(f) or lazy.is_ref(f) for f in (read, parse)):
            raise PluginError(
                f"plugin {plugin!r}: input kind {kind!r}: read and parse must be functions, 'module:function' or None"
            )
        spec = InputKind(kind, str(expected), check, one_list, read, parse, bool(by_path))
        self.input_kinds.add(kind, spec, plugin)

    def add_result_writer(
        self, plugin: str, name: str, accepts: Callable[[Any], bool], write: Callable[[Any, Path], Path] | str
    ) -> None:
        if not callable(accepts) or not (callable(write) or lazy.is_ref(write)):
            raise PluginError(f"plugin {plugin!r}: result writer {name!r} needs callables accepts and write")
        self.result_writers.add(name, ResultWriter(name, accepts, write), plugin)

    def result_writer_for(self, result: Any) -> Callable[[Any, Path], Path] | None:
        """The write function of the first result writer that accepts `result`, if any."""
        for owned in self.result_writers.items.values():
            if owned.value.accepts(result):
                write: Callable[[Any, Path], Path] = lazy.resolve(owned.value.write)
                return write
        return None

    def add_task(self, entry: TaskEntry) -> None:
        """Add a task; a name or alias another task already uses is an error naming both."""
        names = [entry.manifest.task, *entry.manifest.aliases]
        for name in names:
            owner = self._aliases.get(name)
            if owner is not None:
                first = self._tasks[owner]
                raise PluginError(
                    f"task name {name!r} is claimed by both {first.path} (plugin {first.plugin!r}) "
                    f"and {entry.path} (plugin {entry.plugin!r})"
                )
        for name in names:
            self._aliases[name] = entry.manifest.task
        self._tasks[entry.manifest.task] = entry

    def task(self, name: str) -> tuple[TaskEntry, dict[str, str]]:
        """The task called `name` (or an alias, or matching a task's `name_pattern`), and the
        params that the pattern's named groups give (``translation_en_to_de`` -> src/tgt)."""
        if not isinstance(name, str):
            raise UnknownTaskError(f"A task is named by a string, got {name!r}; `taskhub tasks` lists them.")
        canonical = self._aliases.get(name)
        if canonical is not None:
            return self._tasks[canonical], {}
        for entry in self._tasks.values():
            pattern = entry.manifest.name_pattern
            match = re.fullmatch(pattern, name) if pattern else None
            if match:
                return entry, {k: v for k, v in match.groupdict().items() if v is not None}
        raise UnknownTaskError(did_you_mean(name, self._aliases, "task"))

    def task_problems(
        self, manifest: TaskManifest, import_params: bool = True
    ) -> list[tuple[tuple[str | int, ...], str]]:
        """What is wrong with a task manifest given what is registered: unknown stages or loader,
        and stage `params:` their params model rejects; as (field location, message) pairs.
        With `import_params=False` params models not imported yet are left for later (plugin loading
        stays cheap; `manifest validate` and the first run check them)."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        refs: list[tuple[tuple[str | int, ...], Any]] = [
            *((("preprocess", i), ref) for i, ref in enumerate(manifest.preprocess)),
            (("model_stage",), manifest.model_stage),
            *((("postprocess", i), ref) for i, ref in enumerate(manifest.postprocess)),
        ]
        for loc, ref in refs:
            if ref.stage not in self.stages:
                problems.append(((*loc, "stage"), did_you_mean(ref.stage, self.stages.items, "stage")))
                continue
            spec = self.stages.get(ref.stage)
            if not (import_params or spec.params_loaded):
                continue
            try:
                spec.params_model.model_validate(ref.params)
            except ValidationError as exc:
                for err in exc.errors():
                    where = (*loc, "params", *err["loc"])
                    problems.append((where, f"{err['msg']} (params of stage {ref.stage!r})"))
        if manifest.input not in self.input_kinds:
            problems.append((("input",), did_you_mean(manifest.input, self.input_kinds.items, "input kind")))
        if manifest.model.loader and manifest.model.loader not in self.loaders:
            problems.append(
                (("model", "loader"), did_you_mean(manifest.model.loader, self.loaders.items, "model loader"))
            )
        return problems

    def remove_plugin(self, plugin: str) -> None:
        """Forget everything `plugin` registered (it failed half way, or lost a name conflict)."""
        tables: tuple[Table[Any], ...] = (
            self.stages,
            self.loaders,
            self.local_models,
            self.readers,
            self.writers,
            self.input_kinds,
            self.result_writers,
        )
        for table in tables:
            table.items = {k: v for k, v in table.items.items() if v.plugin != plugin}
        self.manifest_dirs = [d for d in self.manifest_dirs if d.plugin != plugin]
        gone = {name for name, entry in self._tasks.items() if entry.plugin == plugin}
        self._tasks = {name: entry for name, entry in self._tasks.items() if name not in gone}
        self._aliases = {alias: name for alias, name in self._aliases.items() if name not in gone}

    def tasks(self) -> list[TaskEntry]:
        return [self._tasks[name] for name in sorted(self._tasks)]
