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
from .manifest import load_task_manifest
from .registry import CommandSpec, Owned, Registry, Table, TaskEntry

ENTRY_POINT_GROUP = "taskhub"


@dataclass
class PluginStatus:
    """One plugin as `taskhub plugins` reports it."""

    name: str
    module: str
    ok: bool
    error: str | None = None


class PluginHost:
    """Owns the pluggy manager and builds the Registry from every plugin that works."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.statuses: dict[str, PluginStatus] = {}
        self._registry: Registry | None = None
        self._entry_points_loaded = False

    def add(self, plugin: Any, name: str) -> None:
        """Register a plugin object (module or instance) by hand, as tests and embedders do."""
        self.pm.register(plugin, name=name)
        self.statuses[name] = PluginStatus(name, getattr(plugin, "__name__", type(plugin).__name__), True)
        self._registry = None

    def remove(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.statuses.pop(name, None)
        self._registry = None

    def load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.has_plugin(ep.name) or ep.name in self.statuses:
                continue
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
                self.statuses[ep.name] = PluginStatus(ep.name, ep.value, True)
            except Exception as exc:  # a broken plugin must not take the others down
                self._fail(ep.name, ep.value, f"import failed: {type(exc).__name__}: {exc}")

    def registry(self) -> Registry:
        """The registry of every working plugin, built once and rebuilt after add/remove."""
        self.load_entry_points()
        if self._registry is None:
            self._registry = self._build()
        return self._registry

    def _fail(self, name: str, module: str, error: str) -> None:
        if os.environ.get("TASKHUB_STRICT_PLUGINS") == "1":
            raise PluginError(f"plugin {name!r} ({module}): {error}")
        warnings.warn(f"taskhub: skipping plugin {name!r}: {error}", stacklevel=3)
        self.statuses[name] = PluginStatus(name, module, False, error)

    def _build(self) -> Registry:
        registry = Registry()
        for name in [n for n, s in self.statuses.items() if s.ok]:
            plugin = self.pm.get_plugin(name)
            if plugin is None:
                continue
            try:
                self._register_plugin(registry, name, plugin)
            except Exception as exc:
                self._fail(name, self.statuses[name].module, f"registration failed: {type(exc).__name__}: {exc}")
                self.pm.unregister(name=name)
        for owned in registry.manifest_dirs:
            self._load_manifests(registry, owned.value, owned.plugin)
        return registry

    def _register_plugin(self, registry: Registry, name: str, plugin: Any) -> None:
        """Collect all of one plugin's registrations, then apply them; a failure adds nothing."""
        calls: list[tuple[str, tuple[Any, ...]]] = []
        for hook_name in hookspecs.HOOK_NAMES:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(register=lambda *args, _h=hook_name: calls.append((_h, args)))
        try:
            for hook_name, args in calls:
                _apply(registry, name, hook_name, args)
        except Exception:
            _undo(registry, name)
            raise

    def _load_manifests(self, registry: Registry, folder: Path, plugin: str) -> None:
        for path in sorted(Path(folder).glob("*.yaml")):
            try:
                registry.add_task(TaskEntry(load_task_manifest(path), path, plugin))
            except TaskhubError as exc:
                self._fail(f"{plugin}:{path.name}", str(path), str(exc))


def _apply(registry: Registry, plugin: str, hook_name: str, args: tuple[Any, ...]) -> None:
    if hook_name == "register_stages":
        registry.add_stage(plugin, *args)
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
    elif hook_name == "register_manifest_dirs":
        registry.manifest_dirs.append(Owned(Path(str(args[0])), plugin))


def _undo(registry: Registry, plugin: str) -> None:
    """Remove everything `plugin` registered (after it failed half way)."""
    tables: tuple[Table[Any], ...] = (
        registry.stages,
        registry.loaders,
        registry.local_models,
        registry.readers,
        registry.writers,
        registry.commands,
    )
    for table in tables:
        table.items = {k: v for k, v in table.items.items() if v.plugin != plugin}
    registry.manifest_dirs = [d for d in registry.manifest_dirs if d.plugin != plugin]


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
