"""The one exception hierarchy of taskhub: every error a user can cause is a TaskhubError."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TaskhubError(Exception):
    """Base of every error taskhub raises on purpose; the CLI prints its message only."""


class UnknownTaskError(TaskhubError):
    """A task name (or alias) that no plugin provides."""


class UnknownStageError(TaskhubError):
    """A stage, model loader, reader or writer name that is not registered."""


class ManifestError(TaskhubError):
    """A task or job manifest that cannot be read or does not validate."""


class ParamError(TaskhubError):
    """A call parameter that no stage declares, that several declare, or whose value is invalid."""


class BadInputError(TaskhubError):
    """An input the task cannot take: says what was wrong and what was expected."""


class ModelNotAvailableError(TaskhubError):
    """A model that cannot be found or loaded, with what to do about it."""


class StageError(TaskhubError):
    """A stage failed with an exception that is not a TaskhubError (a bug in the stage, memory
    running out...): names the stage and the original error, which is chained as the cause."""


class PluginError(TaskhubError):
    """A plugin that failed to import or register, or two plugins claiming the same name."""


def did_you_mean(name: str, known: Iterable[str], what: str) -> str:
    """Message for an unknown `name`: the closest known names first, then all of them."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    rest = [k for k in known if k not in close]
    listing = ", ".join(close + rest) if known else "(none registered)"
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown {what} {name!r}.{hint} Available: {listing}"
