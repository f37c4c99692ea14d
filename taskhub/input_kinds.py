"""Input kinds: what one input of a task is, and how a file, stdin or command-line text becomes one."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import lazy
from .errors import BadInputError


def read_utf8(data: bytes, source: str) -> str:
    """A file's bytes as UTF-8 text: how `text` inputs (and kinds that register no `read`) are read."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{source} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected UTF-8 text."
        ) from None


def read_json(data: bytes | str, source: str, expected: str) -> Any:
    """A file's bytes (or command-line text) parsed as JSON; an error names `source` and `expected`."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, an int over 4300 digits, nesting too deep
        raise BadInputError(f"{source} is not readable JSON ({exc}); expected {expected} as JSON.") from None


@dataclass(frozen=True)
class InputKind:
    """What one input of a task is (registered by plugins through `register_input_kinds`).

    `check` and `one_list` are how a Python call's inputs are checked and counted; `read`,
    `parse` and `by_path` are how the CLI and batch jobs turn files and text into inputs.
    """

    name: str
    expected: str  # how errors describe a valid input: "a string"
    check: Callable[[Any], bool] | None = None  # False (or a BadInputError): not an input of this kind
    one_list: Callable[[Any], bool] | None = None  # True: this list is one input, not many
    read: Callable[[bytes, str], Any] | str | None = None  # (file bytes, source) -> input; None: UTF-8 text
    parse: Callable[[str], Any] | str | None = None  # CLI text naming no file -> input; None: the text itself
    by_path: bool = False  # a file is handed to the stages as its path, unread (images, audio)

    def is_many(self, inputs: Any) -> bool:
        """A list (or tuple) is many inputs, unless this kind says it is one (a chat conversation)."""
        if not isinstance(inputs, (list, tuple)):
            return False
        return not (self.one_list is not None and self.one_list(list(inputs)))

    def check_input(self, item: Any, index: int) -> None:
        """Reject what no stage of this kind can take: BadInputError naming input `index` and what was expected."""
        if item is None:
            raise BadInputError(f"Input {index} is None; expected {self.expected}.")
        try:  # a kind may explain itself: its check raises BadInputError naming the part that is wrong
            accepted = self.check is None or self.check(item)
        except BadInputError as exc:
            raise BadInputError(f"Input {index}: {exc}") from None
        if not accepted:
            raise BadInputError(f"Input {index} is a {type(item).__name__}; expected {self.expected}.")
        if (
            isinstance(item, str) and not self.by_path
        ):  # a path may hold surrogates (a non-UTF-8 file name); text may not
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BadInputError(
                    f"Input {index} is not valid Unicode (an unpaired surrogate at character {exc.start}); "
                    "expected UTF-8 text."
                ) from None

    def from_bytes(self, data: bytes, source: str) -> Any:
        """One input from a file's (or stdin's) content; `source` names it in errors.

        A `by_path` kind takes the bytes as they are (its stages read bytes as well as paths)."""
        if self.by_path:
            return data
        if self.read is None:
            return read_utf8(data, source)
        read: Callable[[bytes, str], Any] = lazy.resolve(self.read)
        return read(data, source)

    def from_text(self, text: str) -> Any:
        """One input from command-line text that names no file (a `by_path` kind needs a file)."""
        if self.by_path:
            raise BadInputError(
                f"{text[:80]!r} is not a file; expected a path to an {self.name} file (or - for stdin)."
            )
        if self.parse is None:
            return text
        parse: Callable[[str], Any] = lazy.resolve(self.parse)
        return parse(text)


def read_object(data: bytes, source: str) -> Any:
    """An `object` file: one JSON value (a mapping of fields)."""
    return read_json(data, source, "a JSON object")


def parse_object(text: str) -> Any:
    """`object` text on the command line: JSON, e.g. '{"question": ..., "context": ...}'."""
    return read_json(text, f"Input {text[:60]!r}", "a JSON object")


def core_kinds() -> list[InputKind]:
    """The two kinds that are plain data rather than a modality, for tasks of any plugin."""
    return [
        InputKind("text", "a string", lambda value: isinstance(value, str)),
        InputKind(
            "object", "a mapping of fields", lambda value: isinstance(value, dict), None, read_object, parse_object
        ),
    ]
