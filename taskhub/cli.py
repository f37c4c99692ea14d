"""The `taskhub` command: list tasks and plugins, run a task, validate manifests, run batch jobs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import pipeline, to_json
from .cli_inputs import cli_input, parse_param
from .errors import ManifestError, ParamError, TaskhubError
from .manifest import JobManifest, json_schema, manifest_kind, read_yaml, validate
from .models import check_device_name, check_dtype_name
from .plugins import get_registry, load_checked_task_manifest, plugin_statuses
from .serve.settings import add_arguments as add_serve_arguments


def cmd_tasks(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = [
        {
            "task": e.manifest.task,
            "aliases": e.manifest.aliases,
            "modality": e.manifest.modality,
            "input": e.manifest.input,
            "plugin": e.plugin,
            "default_model": e.manifest.model.default,
            "description": e.manifest.description,
            "stages": [{"stage": ref.stage, "params": ref.params} for ref in e.manifest.stage_refs()],
        }
        for e in get_registry().tasks()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        aliases = f" (aliases: {', '.join(row['aliases'])})" if row["aliases"] else ""
        print(
            f"{row['task']}{aliases}\n    {row['modality']}, plugin {row['plugin']}, default model {row['default_model']}"
        )
        if args.verbose:
            for ref in row["stages"]:
                params = f" {json.dumps(ref['params'])}" if ref["params"] else ""
                print(f"      - {ref['stage']}{params}")
    return 0


def stage_rows() -> list[dict[str, Any]]:
    """Every registered stage: name, plugin, params (from its pydantic model) and docstring."""
    rows: list[dict[str, Any]] = []
    registry = get_registry()
    for name in sorted(registry.stages.items):
        spec = registry.stages.get(name)
        try:
            schema = spec.params_model.model_json_schema()
        except TaskhubError as exc:  # its module does not import: list the stage, say why
            rows.append({"stage": name, "plugin": spec.plugin, "params": [], "doc": spec.doc, "error": str(exc)})
            continue
        required = set(schema.get("required", []))
        params = [
            {
                "name": field,
                "type": _type_name(info),
                "default": info.get("default"),
                "required": field in required,
                "description": info.get("description", ""),
            }
            for field, info in schema.get("properties", {}).items()
        ]
        rows.append({"stage": name, "plugin": spec.plugin, "params": params, "doc": spec.doc, "error": None})
    return rows


def _type_name(info: dict[str, Any]) -> str:
    if "type" in info:
        return str(info["type"])
    if "enum" in info:
        return " | ".join(json.dumps(v) for v in info["enum"])
    options = info.get("anyOf") or info.get("oneOf") or []
    return " | ".join(_type_name(o) for o in options) or "any"


def cmd_stages(args: argparse.Namespace) -> int:
    rows = stage_rows()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        print(f"{row['stage']}  (plugin {row['plugin']})")
        if row["doc"]:
            print(f"    {row['doc'].splitlines()[0]}")
        if row["error"]:
            print(f"    unavailable: {row['error']}")
        for param in row["params"]:
            default = "required" if param["required"] else f"default {json.dumps(param['default'], default=str)}"
            description = f" -- {param['description']}" if param["description"] else ""
            print(f"    {param['name']}: {param['type']} ({default}){description}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    statuses = plugin_statuses()
    if args.json:
        print(json.dumps([vars(s) for s in statuses], indent=2))
        return 0
    for s in statuses:
        state = "ok" if s.ok else f"FAILED: {s.error}"
        requires = f" (requires {', '.join(s.requires)})" if s.requires else ""
        print(f"{s.name:<14} {s.module:<40} {state}{requires}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _quiet_model_loading()
    params = dict(parse_param(p) for p in args.param)
    if args.output and not Path(args.output).resolve().parent.is_dir():  # before any model loads
        raise ParamError(f"--output {args.output}: its folder does not exist; create it or choose another path.")
    registry = get_registry()
    kind = registry.input_kinds.get(registry.task(args.task)[0].manifest.input)
    inputs = [cli_input(arg, kind) for arg in args.inputs]  # read (and refused) before any model loads
    pipe = pipeline(
        args.task,
        args.model,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        allow_pickle=args.allow_pickle,
    )
    results = pipe(inputs, **params)
    printed_json = False
    for number, result in enumerate(results):
        if isinstance(result, Iterator):
            for delta in result:  # a streamed result (stream=true): print text as it comes
                print(delta, end="", flush=True)
            print()
            continue
        write = registry.result_writer_for(result) if args.output else None
        if write is not None:
            path = Path(args.output)
            if len(args.inputs) > 1:
                path = path.with_name(f"{path.stem}-{number}{path.suffix}")
            try:
                print(f"wrote {write(result, path)}", file=sys.stderr)
            except OSError as exc:
                raise ParamError(f"--output: cannot write {path}: {exc.strerror or exc}") from None
            continue
        if args.output and not printed_json:
            print(
                f"warning: --output saves file-like results only; {args.task!r} gives JSON, printed here.",
                file=sys.stderr,
            )
        printed_json = True
        if args.json:
            print(to_json(result))
        else:
            print(to_json(result, indent=2))
    return 0


def cmd_manifest_validate(args: argparse.Namespace) -> int:
    """Each file checked in full (stage params included); a bad file is reported and the next one checked."""
    failed = 0
    for raw in args.paths:
        path = Path(raw)
        try:
            kind = _validate_manifest(path)
            print(f"{path}: ok ({kind} manifest)")
        except TaskhubError as exc:
            failed += 1
            message = _one_line(exc)
            print(message if message.startswith(f"{path}:") else f"{path}: {message}", file=sys.stderr)
    return 1 if failed else 0


def _validate_manifest(path: Path) -> str:
    from .pipeline import TaskPlan

    data, root = read_yaml(path)
    kind = manifest_kind(data)
    if kind == "task":
        load_checked_task_manifest(path, get_registry())
        return kind
    job = validate(JobManifest, data, str(path), root)
    try:
        TaskPlan(job.task).check_params(job.params)
        check_device_name(job.device)
        check_dtype_name(job.dtype)
    except TaskhubError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    return kind


def cmd_manifest_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(args.kind), indent=2))
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_job

    summary = run_job(
        args.job,
        executor=args.executor,
        workers=args.workers,
        resume=not args.no_resume,
        limit=args.limit,
        dry_run=args.dry_run,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 1 if summary.get("stopped") in ("error", "interrupted") else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve, settings_from_args

    serve(settings_from_args(args))
    return 0


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _tasks_args(parser: argparse.ArgumentParser) -> None:
    _json_flag(parser)
    parser.add_argument("--verbose", "-v", action="store_true", help="also list each task's stages and their params")


def _run_args(run: argparse.ArgumentParser) -> None:
    run.add_argument("task")
    run.add_argument("inputs", nargs="+", metavar="INPUT", help="text, a file path, or - for stdin")
    run.add_argument("--model", help="hub id or local directory (default: the task's)")
    run.add_argument("--revision")
    run.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    run.add_argument("--dtype", help="float32, bfloat16 or float16")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="call parameter (repeatable)")
    run.add_argument("--json", action="store_true", help="one compact JSON line per input")
    run.add_argument("--output", help="save file-like results (audio: .wav) here, as the plugin registered")
    run.add_argument("--trust-remote-code", action="store_true", help="run Python code shipped with a hub model")
    run.add_argument("--allow-pickle", action="store_true", help="load pickle-based weights (.bin/.pt)")


def _manifest_args(manifest: argparse.ArgumentParser) -> None:
    msub = manifest.add_subparsers(dest="manifest_command", required=True)
    check = msub.add_parser("validate", help="validate task or job manifests (stage params included)")
    check.add_argument("paths", nargs="+", metavar="PATH")
    check.set_defaults(func=cmd_manifest_validate)
    schema = msub.add_parser("schema", help="print the JSON Schema of a manifest kind")
    schema.add_argument("kind", nargs="?", choices=["task", "job"], default="task")
    schema.set_defaults(func=cmd_manifest_schema, needs_plugins=False)


def _batch_args(batch: argparse.ArgumentParser) -> None:
    batch.add_argument("job", help="job manifest (YAML)")
    batch.add_argument("--executor", choices=["local", "ray"])
    batch.add_argument("--workers", type=int)
    batch.add_argument("--no-resume", action="store_true", help="start over (the old output is moved aside)")
    batch.add_argument("--limit", type=int, help="process at most N inputs")
    batch.add_argument("--dry-run", action="store_true", help="validate and count inputs; load no model")


@dataclass(frozen=True)
class Command:
    """One `taskhub` subcommand. Another part of taskhub adds one with `COMMANDS.append(...)`
    before `main()` runs (the `serve` and `index` commands do)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int] | None  # None: subcommands set their own func
    needs_plugins: bool = True  # load plugins (and print the ones that failed) before running


COMMANDS: list[Command] = [
    Command("tasks", "list the available tasks", _tasks_args, cmd_tasks),
    Command("stages", "list every registered stage with its plugin, params and docstring", _json_flag, cmd_stages),
    Command("plugins", "list plugins, including ones that failed to load and why", _json_flag, cmd_plugins),
    Command("run", "run a task on one or more inputs", _run_args, cmd_run),
    Command("manifest", "validate manifests or print their JSON Schema", _manifest_args, None),
    Command("batch", "run a batch job manifest", _batch_args, cmd_batch),
    Command(
        "serve", "OpenAI-compatible HTTP server over every task (extra: taskhub[serve])", add_serve_arguments, cmd_serve
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskhub", description="Run model tasks from YAML manifests and plugins.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help)
        command.arguments(child)
        child.set_defaults(needs_plugins=command.needs_plugins)
        if command.run is not None:
            child.set_defaults(func=command.run)
    _mount_plugin_commands(sub)
    return parser


def _mount_plugin_commands(sub: Any) -> None:
    """Subcommands plugins registered (register_commands); built-in names win."""
    for name, owned in sorted(get_registry().commands.items.items()):
        if name in sub.choices:
            warnings.warn(
                f"plugin {owned.plugin!r} registers command {name!r}, a built-in command; skipped", stacklevel=2
            )
            continue
        command = sub.add_parser(name, help=owned.value.help)
        owned.value.configure(command)
        command.set_defaults(func=owned.value.run, needs_plugins=True)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _quiet_model_loading() -> None:
    """transformers draws a progress bar for every weight load; the CLI's output is the result."""
    if _DEBUG:
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _report_failed_plugins() -> None:
    """Print every plugin that failed to load, whatever Python's warning filters say."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        statuses = plugin_statuses()
    for status in statuses:
        if not status.ok:
            print(f"warning: plugin {status.name!r} is unavailable: {status.error}", file=sys.stderr)


_DEBUG = False


def main(argv: list[str] | None = None) -> int:
    global _DEBUG
    args = build_parser().parse_args(argv)
    _DEBUG = args.debug
    if not args.debug:
        warnings.showwarning = _show_warning
    try:
        if args.needs_plugins:
            _report_failed_plugins()
        return int(args.func(args))
    except TaskhubError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `taskhub stages | head`: the reader left; nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open so the interpreter's final flush is quiet
        return 141
    except Exception as exc:  # an unexpected failure still gets a one-line message
        if args.debug:
            traceback.print_exc()
        else:
            print(f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    """The error's message on one line (a manifest error lists its problems separated by ';')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines)


if __name__ == "__main__":
    sys.exit(main())
