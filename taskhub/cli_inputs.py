"""How the CLI turns INPUT arguments and --param values into Python inputs and params."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import BadInputError, ParamError


def parse_param(text: str) -> tuple[str, Any]:
    """`k=v` with v read as a YAML scalar or flow collection: 5, 0.7, true, [a, b], {x: 1};
    `k=@file` reads the value from a file: .json / .yaml / .yml parsed (a JSON Schema), others as text (a grammar)."""
    if "=" not in text:
        raise ParamError(f"--param expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    if raw.startswith("@") and len(raw) > 1:
        return key.strip(), _value_file(Path(raw[1:]), key.strip())
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _value_file(path: Path, key: str) -> Any:
    """A `--param KEY=@FILE` value: .json / .yaml / .yml files parsed (JSON is YAML), any other file as text."""
    if not path.is_file():
        raise ParamError(f"--param {key}=@{path}: no such file; give the path of a .json, .yaml or text file.")
    text = read_text_file(path)
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamError(f"--param {key}=@{path}: not valid JSON or YAML: {exc}") from None


def read_text_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected a UTF-8 text file."
        ) from None
    except OSError as exc:
        raise BadInputError(f"Cannot read {path}: {exc.strerror}.") from None


def cli_input(arg: str, kind: str) -> Any:
    """One INPUT argument: literal text, a file path, or `-` for stdin, read as the task's input kind."""
    if kind in ("image", "audio"):
        if arg == "-":
            return sys.stdin.buffer.read()
        if not Path(arg).is_file():
            raise BadInputError(f"{arg!r} is not a file; expected a path to an {kind} file (or - for stdin).")
        return arg
    if arg == "-":
        text = sys.stdin.read()
    elif Path(arg).is_file():
        text = read_text_file(Path(arg))
    else:
        text = arg
    if kind in ("object", "chat"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            if kind == "chat":
                return text
            raise BadInputError(f"Input {arg[:60]!r} is not JSON; this task expects a JSON object.") from None
    return text
