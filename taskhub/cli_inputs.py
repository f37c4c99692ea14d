"""How the CLI turns INPUT arguments and --param values into Python inputs and params."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from .errors import BadInputError, ParamError
from .input_kinds import InputKind, read_utf8

DEFAULT_MAX_INPUT_BYTES = 256 << 20


def parse_param(text: str) -> tuple[str, Any]:
    """`k=v` with v read as a YAML scalar or flow collection: 5, 0.7, true, [a, b], {x: 1};
    `k=@file` reads the value from a file: .json / .yaml / .yml parsed (a JSON Schema), others as text (a grammar)."""
    if "=" not in text:
        raise ParamError(f"--param expects KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    if raw.startswith("@") and len(raw) > 1:
        return key.strip(), _value_file(Path(raw[1:]), key.strip())
    try:
        value = _yaml_value(raw, f"--param {key.strip()}") if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _yaml_value(text: str, where: str) -> Any:
    """Safe-loaded YAML (JSON is YAML); a value Python cannot hold is a ParamError, not a crash."""
    try:
        return yaml.safe_load(text)
    except (ValueError, RecursionError) as exc:  # an int over 4300 digits, nesting deeper than Python recurses
        raise ParamError(f"{where}: value not usable ({type(exc).__name__}: {str(exc)[:120]})") from None


def _value_file(path: Path, key: str) -> Any:
    """A `--param KEY=@FILE` value: .json / .yaml / .yml files parsed (JSON is YAML), any other file as text."""
    if not path.is_file():
        raise ParamError(f"--param {key}=@{path}: no such file; give the path of a .json, .yaml or text file.")
    text = read_text_file(path)
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        return text
    try:
        return _yaml_value(text, f"--param {key}=@{path}")
    except yaml.YAMLError as exc:
        raise ParamError(f"--param {key}=@{path}: not valid JSON or YAML: {exc}") from None


def max_input_bytes() -> int:
    """The most bytes one INPUT (a file or stdin) may hold: TASKHUB_MAX_INPUT_BYTES, default 256 MiB."""
    raw = os.environ.get("TASKHUB_MAX_INPUT_BYTES", "")
    try:
        limit = int(raw) if raw else DEFAULT_MAX_INPUT_BYTES
    except ValueError:
        raise ParamError(f"TASKHUB_MAX_INPUT_BYTES must be a whole number of bytes, got {raw!r}") from None
    if limit < 1:
        raise ParamError(f"TASKHUB_MAX_INPUT_BYTES must be at least 1, got {limit}")
    return limit


def _read_capped(stream: BinaryIO, name: str) -> bytes:
    limit = max_input_bytes()
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise BadInputError(f"{name} is over {limit} bytes; raise TASKHUB_MAX_INPUT_BYTES to allow more.")
    return data


def read_file_bytes(path: Path) -> bytes:
    """A regular file's content, capped at TASKHUB_MAX_INPUT_BYTES."""
    try:
        with path.open("rb") as f:
            return _read_capped(f, str(path))
    except OSError as exc:
        raise BadInputError(f"Cannot read {path}: {exc.strerror}.") from None


def read_text_file(path: Path) -> str:
    """A regular file's content as UTF-8 text, capped like every INPUT."""
    return read_utf8(read_file_bytes(path), str(path))


def _path_kind(arg: str) -> str | None:
    """ "file", "folder" or "special" (FIFO, socket, device) when `arg` names one; None when it names nothing.

    Text that cannot be a path (too long, a NUL byte) names nothing: it is literal text."""
    try:
        mode = os.stat(arg).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return "file"
    return "folder" if stat.S_ISDIR(mode) else "special"


def cli_input(arg: str, kind: InputKind) -> Any:
    """One INPUT argument: literal text, a regular file's path, or `-` for stdin, made an input of `kind`.

    It is a file only if it names an existing regular file; a folder, FIFO or device is an
    error (reading one would fail or block), anything else is literal text (`kind.from_text`).
    A file is read with `kind.from_bytes` -- or passed on as its path for a `by_path` kind --
    and stdin like a file; both are capped at TASKHUB_MAX_INPUT_BYTES."""
    if arg == "-":
        return kind.from_bytes(_read_capped(sys.stdin.buffer, "stdin"), "stdin")
    found = _path_kind(arg)
    if found in ("folder", "special"):
        what = "a folder" if found == "folder" else "not a regular file (a FIFO, socket or device)"
        expected = f"a path to an {kind.name} file (or - for stdin)" if kind.by_path else "text, a file or -"
        raise BadInputError(f"{arg!r} is {what}; expected {expected}.")
    if found == "file":
        return arg if kind.by_path else kind.from_bytes(read_file_bytes(Path(arg)), arg)
    return kind.from_text(arg)
