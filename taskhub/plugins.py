"""Plugin manager: load entry points, collect what each plugin registers, isolate broken plugins."""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, TaskhubError
from .manifest import TaskManifest, located_error, read_yaml, validate
from .registry import CommandSpec, Owned, Registry, TaskEntry

ENTRY_POINT_GROUP = "taskhub"
BUILTIN_DISTRIBUTION = "taskhub"  # its plugins register first, so a third party never shadows them
REQUIRES_ATTRIBUTE = "TASKHUB_REQUIRES"  # a plugin's declared dependencies: names of other plugins


@dataclass
class PluginStatus:
    """One plugin as `taskhub plugins` reports it."""

    name: str
    module: str
    ok: bool
    error: str | None = None
    requires: tuple[str, ...] = ()


@dataclass
class _Loaded:
    """A plugin object in the pluggy manager, and how it got there."""

    module: str
    builtin: bool


class PluginHost:
    """Owns the pluggy manager and builds the Registry from every plugin that works.

    Plugins register in a fixed order -- the built-in ones first, then the others by name, each
    after the plugins it requires -- so a name conflict always fails the same plugin, whatever
    the order of sys.path.
    """

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.statuses: dict[str, PluginStatus] = {}
        self._loaded: dict[str, _Loaded] = {}
        self._import_failures: dict[str, PluginStatus] = {}
        self._registry: Registry | None = None
        self._entry_points_loaded = False

    def add(self, plugin: Any, name: str) -> None:
        """Register a plugin object (module or instance) by hand, as tests and embedders do."""
        self.pm.register(plugin, name=name)
        self._loaded[name] = _Loaded(getattr(plugin, "__name__", type(plugin).__name__), builtin=False)
        self._registry = None

    def remove(self, name: str) -> None:
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self._loaded.pop(name, None)
        self.statuses.pop(name, None)
        self._registry = None

    def load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.has_plugin(ep.name) or ep.name in self._loaded:
                continue
            dist = getattr(ep, "dist", None)
            builtin = dist is not None and dist.name == BUILTIN_DISTRIBUTION
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
                self._loaded[ep.name] = _Loaded(ep.value, builtin)
            except Exception as exc:  # a broken plugin must not take the others down
                status = PluginStatus(ep.name, ep.value, False, f"import failed: {type(exc).__name__}: {exc}")
                self._import_failures[ep.name] = status
                self._warn(status)

    def registry(self) -> Registry:
        """The registry of every working plugin, built once and rebuilt after add/remove."""
        self.load_entry_points()
        if self._registry is None:
            self._registry = self._build()
        return self._registry

    def _warn(self, status: PluginStatus) -> None:
        if os.environ.get("TASKHUB_STRICT_PLUGINS") == "1":
            raise PluginError(f"plugin {status.name!r} ({status.module}): {status.error}")
        warnings.warn(f"taskhub: skipping plugin {status.name!r}: {status.error}", stacklevel=4)

    def _order(self) -> list[str]:
        """Built-ins first, then by name; a plugin after the plugins it requires (where they exist)."""
        names = sorted(self._loaded, key=lambda n: (not self._loaded[n].builtin, n))
        ordered: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in ordered or name in visiting or name not in self._loaded:
                return
            visiting.add(name)
            for dependency in self._requires(name):
                visit(dependency)
            visiting.discard(name)
            ordered.append(name)

        for name in names:
            visit(name)
        return ordered

    def _requires(self, name: str) -> tuple[str, ...]:
        declared = getattr(self.pm.get_plugin(name), REQUIRES_ATTRIBUTE, ())
        return tuple(declared) if isinstance(declared, (list, tuple)) else ()

    def _build(self) -> Registry:
        registry = Registry()
        self.statuses = dict(self._import_failures)
        for name in self._order():
            loaded, requires = self._loaded[name], self._requires(name)
            status = PluginStatus(name, loaded.module, True, requires=requires)
            self.statuses[name] = status
            try:
                self._check_requirements(name, requires)
                self._register_plugin(registry, name, self.pm.get_plugin(name))
            except Exception as exc:
                registry.remove_plugin(name)
                status.ok = False
                status.error = str(exc) if isinstance(exc, TaskhubError) else f"{type(exc).__name__}: {exc}"
                self._warn(status)
        return registry

    def _check_requirements(self, name: str, requires: tuple[str, ...]) -> None:
        for dependency in requires:
            other = self.statuses.get(dependency)
            if other is None:
                raise PluginError(f"requires plugin {dependency!r}, which is not installed")
            if not other.ok:
                raise PluginError(f"requires plugin {dependency!r}, which failed: {other.error}")

    def _register_plugin(self, registry: Registry, name: str, plugin: Any) -> None:
        """Collect all of one plugin's registrations, then apply them, then its task manifests.
        A failure or a name another plugin already holds leaves nothing of this plugin behind."""
        calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        for hook_name in hookspecs.HOOK_NAMES:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=lambda *a, _h=hook_name, **k: calls.append((_h, a, k)))
        for hook_name, args, kwargs in calls:
            _apply(registry, name, hook_name, args, kwargs)
        for owned in [d for d in registry.manifest_dirs if d.plugin == name]:
            self._load_manifests(registry, owned.value, name)

    def _load_manifests(self, registry: Registry, folder: Path, plugin: str) -> None:
        """Each task manifest in `folder`; an invalid one is skipped (and reported), a task name
        another plugin already registered fails the whole plugin."""
        for path in sorted(Path(folder).glob("*.yaml")):
            try:
                manifest = load_checked_task_manifest(path, registry, import_params=False)
            except TaskhubError as exc:
                status = PluginStatus(f"{plugin}:{path.name}", str(path), False, str(exc))
                self.statuses[status.name] = status
                self._warn(status)
                continue
            registry.add_task(TaskEntry(manifest, path, plugin))


def load_checked_task_manifest(path: Path, registry: Registry, import_params: bool = True) -> TaskManifest:
    """A task manifest validated in full: its schema, and its stages, loader and stage params
    against what is registered; errors name the file, line and field. `import_params=False`
    skips params models that are still lazy references (plugin loading imports nothing heavy)."""
    data, root = read_yaml(path)
    manifest: TaskManifest = validate(TaskManifest, data, str(path), root)
    problems = registry.task_problems(manifest, import_params)
    if problems:
        raise located_error(problems, str(path), root)
    return manifest


def _apply(registry: Registry, plugin: str, hook_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if hook_name == "register_stages":
        registry.add_stage(plugin, *args, **kwargs)
    elif hook_name == "register_model_loaders":
        registry.loaders.add(args[0], args[1], plugin)
    elif hook_name == "register_local_models":
        registry.local_models.add(args[0], Path(args[1]), plugin)
    elif hook_name == "register_batch_readers":
        registry.readers.add(args[0], args[1], plugin)
    elif hook_name == "register_batch_writers":
        registry.writers.add(args[0], args[1], plugin)
    elif hook_name == "register_commands":
        registry.commands.add(args[0], CommandSpec(*args), plugin)
    elif hook_name == "register_result_writers":
        registry.add_result_writer(plugin, *args, **kwargs)
    elif hook_name == "register_input_kinds":
        registry.add_input_kind(plugin, *args, **kwargs)
    elif hook_name == "register_manifest_dirs":
        registry.manifest_dirs.append(Owned(Path(str(args[0])), plugin))


_host = PluginHost()


def get_registry() -> Registry:
    """The process-wide registry of all working plugins."""
    return _host.registry()


def register_plugin(plugin: Any, name: str) -> None:
    """Add a plugin object at run time (tests, notebooks); undo with `unregister_plugin`."""
    _host.add(plugin, name)


def unregister_plugin(name: str) -> None:
    _host.remove(name)


def plugin_statuses() -> list[PluginStatus]:
    """Every plugin seen, working or not, for `taskhub plugins`."""
    _host.registry()
    return sorted(_host.statuses.values(), key=lambda s: s.name)
