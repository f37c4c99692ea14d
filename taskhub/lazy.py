"""Lazy references ("package.module:name") that plugins register instead of objects, so importing a
plugin stays cheap: the module (and torch, transformers...) is imported when the object is first used."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import threading
from typing import Any

from .errors import PluginError

REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_resolved: dict[str, Any] = {}
_lock = threading.Lock()


def is_ref(value: Any) -> bool:
    """True for a "module:attribute" string."""
    return isinstance(value, str) and REF.match(value) is not None


def resolve(value: Any) -> Any:
    """The object a reference names (imported once), or `value` itself when it is no reference."""
    if not isinstance(value, str):
        return value
    with _lock:
        if value in _resolved:
            return _resolved[value]
    module_name, _, attr = value.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except Exception as exc:  # an import error inside the plugin: name the reference
        raise PluginError(f"cannot import {value!r}: {type(exc).__name__}: {exc}") from exc
    with _lock:
        _resolved[value] = target
    return target


def is_resolved(value: Any) -> bool:
    """True when `value` is an object, or a reference already imported."""
    return not isinstance(value, str) or value in _resolved


def docstring(value: Any) -> str:
    """The docstring of what `value` names, read from the module's source when it is not imported
    yet (so listing stages imports nothing heavy)."""
    if is_resolved(value):
        import inspect

        return inspect.getdoc(resolve(value)) or ""
    module_name, _, attr = value.partition(":")
    try:
        spec = importlib.util.find_spec(module_name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return ""
        with open(spec.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (ImportError, OSError, SyntaxError, ValueError):
        return ""
    node: Any = tree
    for part in attr.split("."):
        node = next(
            (n for n in getattr(node, "body", []) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part),
            None,
        )
        if node is None:
            return ""
    return ast.get_docstring(node) or ""
