"""A files glob that stays inside its root: no symlinked folders, no loops, no escape through links.

`glob.iglob` follows symlinked folders under ``**`` (a link to an ancestor loops until the path
is too long) and reads links that lead anywhere. This walker matches the pattern one path
part at a time (``*``, ``?``, ``[...]`` within a part, ``**`` for any number of folders; names
starting with a dot only match a part that starts with a dot, as in glob), in sorted order.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Match:
    """One matched path; `problem` says why it may not be read (it then fails as an item)."""

    path: Path
    problem: str | None = None


def glob_root(pattern: str) -> Path:
    """The folder a glob starts from: its leading parts without glob characters."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(c in part for c in GLOB_CHARS):
            break
        fixed.append(part)
    return Path(*fixed).parent if len(fixed) == len(parts) else Path(*fixed)


def walk_glob(pattern: Path, follow_symlinks: bool = False) -> Iterator[Match]:
    """Every file under `glob_root(pattern)` matching `pattern`; folders that match are skipped.

    Without `follow_symlinks`, symlinked folders are not entered and a symlinked file whose
    target lies outside the root is a Match with a problem. With it, links are followed, and
    a folder already on the current path (a loop) is not entered again.
    """
    root = glob_root(str(pattern))
    parts = _collapse(Path(pattern).relative_to(root).parts)
    walker = _Walker(Path(os.path.realpath(root)), follow_symlinks)
    seen: set[Path] | None = set() if parts.count("**") > 1 else None  # a/**/b/**/c reaches paths twice
    for match in walker.walk(root, parts, (_dir_id(root),)):
        if seen is not None:
            if match.path in seen:
                continue
            seen.add(match.path)
        yield match


def _collapse(parts: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for part in parts:
        if not (part == "**" and out and out[-1] == "**"):
            out.append(part)
    return tuple(out)


def _dir_id(path: Path) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (-1, -1)
    return (info.st_dev, info.st_ino)


class _Walker:
    def __init__(self, real_root: Path, follow_symlinks: bool) -> None:
        self.real_root = real_root
        self.follow = follow_symlinks

    def walk(self, folder: Path, parts: tuple[str, ...], ancestors: tuple[tuple[int, int], ...]) -> Iterator[Match]:
        head, rest = parts[0], parts[1:]
        if head == "**":
            yield from self.walk(folder, rest or ("*",), ancestors)  # ** also matches no folder at all
            for sub in self._entries(folder, "*"):
                inner = self._enterable(sub, ancestors)
                if inner is not None:
                    yield from self.walk(sub, parts, inner)
            return
        candidates = [folder / head] if not any(c in head for c in GLOB_CHARS) else self._entries(folder, head)
        for path in candidates:
            if rest:
                inner = self._enterable(path, ancestors)
                if inner is not None:
                    yield from self.walk(path, rest, inner)
            else:
                match = self._file(path)
                if match is not None:
                    yield match

    def _entries(self, folder: Path, part: str) -> list[Path]:
        """Names in `folder` matching one pattern part, sorted; hidden names need a dotted part."""
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return []
        hidden_ok = part.startswith(".")
        return [folder / n for n in names if (hidden_ok or not n.startswith(".")) and fnmatch.fnmatchcase(n, part)]

    def _enterable(self, path: Path, ancestors: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...] | None:
        """The ancestors to pass down if `path` is a folder this walk may enter, else None."""
        try:
            info = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            if not self.follow:
                return None
            try:
                info = os.stat(path)
            except OSError:  # dangling or looping link
                return None
        if not stat.S_ISDIR(info.st_mode):
            return None
        ident = (info.st_dev, info.st_ino)
        return None if ident in ancestors else (*ancestors, ident)

    def _file(self, path: Path) -> Match | None:
        try:
            link = stat.S_ISLNK(os.lstat(path).st_mode)
            info = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:  # a link loop, a permission problem
            return Match(path, f"{path}: cannot be read ({exc.strerror or exc})")
        if stat.S_ISDIR(info.st_mode):
            return None
        if link and not self.follow and not Path(os.path.realpath(path)).is_relative_to(self.real_root):
            return Match(
                path,
                f"{path} is a symlink leading outside {self.real_root}; set inputs.follow_symlinks: true to read it",
            )
        if not stat.S_ISREG(info.st_mode):
            return Match(path, f"{path} is not a regular file (a FIFO, socket or device); expected a file")
        return Match(path)
