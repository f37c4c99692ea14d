"""The plugin contract: every hook a taskhub plugin may implement.

Each hook receives a `register` callback and calls it once per thing it provides.
Hooks only register; they must not load models or do slow work. Functions, classes and params
models may be registered as ``"package.module:name"`` references: the module is imported when
the stage or loader first runs, so importing a plugin stays cheap.

A plugin that uses another plugin's stages, loaders or public API declares it with a module (or
plugin object) attribute ``TASKHUB_REQUIRES = ("text",)``: it registers after those plugins, and
is reported unavailable when one of them is missing or failed. See docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT_NAME = "taskhub"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_stages(register: Callable[..., None]) -> None:
    """Register stage functions.

    Call ``register(name, func, params_model=None)`` per stage:

    - ``name``: dotted, globally unique, prefixed by the plugin (``"text.tokenize"``); lower case
      letters, digits and ``_``, at least two parts.
    - ``func(items: list, params: params_model, ctx: StageContext) -> list`` (or a
      ``"module:function"`` reference): works on a batch and returns one output per input item,
      in order. It must not write to ``ctx.model`` (shared by threads and calls).
    - ``params_model``: a pydantic model class (``extra="forbid"``) of the stage's parameters, or
      a ``"module:Class"`` reference; None: no params. Call-time keyword arguments are routed to
      the stage whose model declares them.
    """


@hookspec
def register_model_loaders(register: Callable[..., None]) -> None:
    """Register model loaders.

    Call ``register(name, loader)`` per loader (a function or a ``"module:function"`` reference);
    ``loader(source: ModelSource) -> Any`` returns whatever the task's stages find in
    ``ctx.model``. Pass ``**source.from_pretrained_kwargs()`` to transformers' ``from_pretrained``
    (``weights=False`` for tokenizers and processors) rather than reading the flags yourself. ``source.path`` is a local
    directory the core already resolved; honour ``source.allow_pickle`` (safetensors only
    when False) and ``source.trust_remote_code``.
    """


@hookspec
def register_manifest_dirs(register: Callable[..., None]) -> None:
    """Register folders of task manifests: ``register(path)``; every ``*.yaml`` in it is a task."""


@hookspec
def register_local_models(register: Callable[..., None]) -> None:
    """Register models available without network: ``register(model_id, local_dir)``.

    A task whose model is ``model_id`` then loads from ``local_dir`` offline.
    """


@hookspec
def register_batch_readers(register: Callable[..., None]) -> None:
    """Register batch input readers: ``register(kind, reader)``.

    ``kind`` is the key used under ``inputs:`` in a job manifest (``files``, ``jsonl``, ``csv``),
    or the name a job gives as ``inputs: {reader: KIND, path: ...}``. ``reader`` follows the
    ``BatchReader`` protocol in ``taskhub/batch/readers.py``.
    """


@hookspec
def register_batch_writers(register: Callable[..., None]) -> None:
    """Register batch output writers: ``register(suffix, writer)`` for an output file suffix (``.jsonl``).

    ``writer`` follows the ``BatchWriter`` protocol in ``taskhub/batch/writers.py``.
    """


@hookspec
def register_commands(register: Callable[..., None]) -> None:
    """Register `taskhub` subcommands: ``register(name, configure, run, help_text)``.

    - ``configure(parser: argparse.ArgumentParser) -> None`` adds the command's arguments
      (nested subcommands included); keep imports in it and in ``run`` lazy.
    - ``run(args: argparse.Namespace) -> int`` runs the command and returns its exit status;
      a TaskhubError it raises is printed as one line, as for the built-in commands.

    - ``help_text`` (optional): the one line `taskhub --help` shows.

    A name that a built-in command already uses is reported and skipped.
    """


@hookspec
def register_input_kinds(register: Callable[..., None]) -> None:
    """Register what one input of a task can be, and how files and command-line text become one:
    ``register(kind, expected, check=None, one_list=None, *, read=None, parse=None, by_path=False)``.

    - ``kind``: the name task manifests give as ``input:`` (``text``, ``image``, ``chat``...).
    - ``expected``: how error messages describe a valid input ("a string").
    - ``check(value) -> bool``: False rejects the input with a BadInputError naming ``expected``
      (None: anything but None is accepted here; stages check further).
    - ``one_list(value) -> bool``: True when a list passed to a pipeline is ONE input of this
      kind rather than many (a chat conversation is a list of messages); None: never.
    - ``read(data: bytes, source: str) -> Any``: a file's content (a CLI INPUT file, stdin, a batch
      job's ``files:`` item) made one input; raise BadInputError naming ``source``. None: UTF-8 text.
    - ``parse(text: str) -> Any``: a CLI INPUT that names no file made one input. None: the text.
    - ``by_path``: True for kinds whose files the stages open themselves (images, audio): they get
      the file's path (stdin: its bytes), and CLI text that names no file is an error.

    ``read`` and ``parse`` may be ``"module:function"`` references.
    """


@hookspec
def register_result_writers(register: Callable[..., None]) -> None:
    """Register how `taskhub run --output PATH` saves results that are files rather than JSON:
    ``register(name, accepts, write)``.

    - ``accepts(result) -> bool``: True for the results this writer saves (a text-to-speech
      ``{"audio", "sampling_rate"}`` dict).
    - ``write(result, path: Path) -> Path`` (or a ``"module:function"`` reference): saves it,
      returns where. Several inputs get numbered paths (``speech-0.wav``, ``speech-1.wav``).
    """


def _spec_names() -> list[str]:
    return [name for name, value in globals().items() if callable(value) and name.startswith("register_")]


HOOK_NAMES: tuple[str, ...] = tuple(_spec_names())
__all__ = ["hookimpl", "hookspec", "HOOK_NAMES", "PROJECT_NAME"]
