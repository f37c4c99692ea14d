"""The `taskhub` command: list tasks and plugins, run a task, validate manifests, run batch jobs."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .api import pipeline, to_json
from .cli_inputs import cli_input, parse_param
from .errors import ManifestError, TaskhubError
from .manifest import JobManifest, TaskManifest, json_schema, manifest_kind, read_yaml, validate
from .plugins import get_registry, plugin_statuses


def cmd_tasks(args: argparse.Namespace) -> int:
    rows = [
        {
            "task": e.manifest.task,
            "aliases": e.manifest.aliases,
            "modality": e.manifest.modality,
            "input": e.manifest.input,
            "plugin": e.plugin,
            "default_model": e.manifest.model.default,
            "description": e.manifest.description,
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
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    statuses = plugin_statuses()
    if args.json:
        print(json.dumps([vars(s) for s in statuses], indent=2))
        return 0
    for s in statuses:
        state = "ok" if s.ok else f"FAILED: {s.error}"
        print(f"{s.name:<14} {s.module:<40} {state}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    params = dict(parse_param(p) for p in args.param)
    pipe = pipeline(args.task, args.model, revision=args.revision, device=args.device, dtype=args.dtype)
    inputs = [cli_input(arg, pipe.manifest.input) for arg in args.inputs]
    results = pipe(inputs, **params)
    for arg, result in zip(args.inputs, results):
        if isinstance(result, Iterator):
            for delta in result:  # a streamed result (stream=true): print text as it comes
                print(delta, end="", flush=True)
            print()
            continue
        if args.output and isinstance(result, dict) and {"audio", "sampling_rate"} <= result.keys():
            _write_wav(result, Path(args.output), len(args.inputs), args.inputs.index(arg))
            continue
        if args.json:
            print(to_json(result))
        else:
            print(to_json(result, indent=2))
    return 0


def _write_wav(result: dict[str, Any], path: Path, count: int, index: int) -> None:
    """Audio results (text-to-speech) go to a WAV file; several inputs get numbered files."""
    import numpy as np
    import soundfile

    target = path if count == 1 else path.with_name(f"{path.stem}-{index}{path.suffix}")
    soundfile.write(str(target), np.asarray(result["audio"], dtype=np.float32), int(result["sampling_rate"]))
    print(f"wrote {target}", file=sys.stderr)


def cmd_manifest_validate(args: argparse.Namespace) -> int:
    from .pipeline import TaskPlan

    failed = 0
    for raw in args.paths:
        path = Path(raw)
        try:
            data, root = read_yaml(path)
            kind = manifest_kind(data)
            if kind == "job":
                job = validate(JobManifest, data, str(path), root)
                TaskPlan(job.task).check_params(job.params)
            else:
                task = validate(TaskManifest, data, str(path), root)
                registry = get_registry()
                for ref in task.stage_refs():
                    registry.stages.get(ref.stage)
                if task.model.loader:
                    registry.loaders.get(task.model.loader)
            print(f"{path}: ok ({kind} manifest)")
        except TaskhubError as exc:
            failed += 1
            print(f"{path}: {exc}", file=sys.stderr)
    return 1 if failed else 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskhub", description="Run model tasks from YAML manifests and plugins.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    tasks = sub.add_parser("tasks", help="list the available tasks")
    tasks.add_argument("--json", action="store_true")
    tasks.set_defaults(func=cmd_tasks)

    plugins = sub.add_parser("plugins", help="list plugins, including ones that failed to load")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    run = sub.add_parser("run", help="run a task on one or more inputs")
    run.add_argument("task")
    run.add_argument("inputs", nargs="+", metavar="INPUT", help="text, a file path, or - for stdin")
    run.add_argument("--model", help="hub id or local directory (default: the task's)")
    run.add_argument("--revision")
    run.add_argument("--device")
    run.add_argument("--dtype", help="float32, bfloat16 or float16")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="call parameter (repeatable)")
    run.add_argument("--json", action="store_true", help="one compact JSON line per input")
    run.add_argument("--output", help="write audio results to this WAV file")
    run.set_defaults(func=cmd_run)

    manifest = sub.add_parser("manifest", help="validate manifests or print their JSON Schema")
    msub = manifest.add_subparsers(dest="manifest_command", required=True)
    check = msub.add_parser("validate", help="validate task or job manifests")
    check.add_argument("paths", nargs="+", metavar="PATH")
    check.set_defaults(func=cmd_manifest_validate)
    schema = msub.add_parser("schema", help="print the JSON Schema of a manifest kind")
    schema.add_argument("kind", nargs="?", choices=["task", "job"], default="task")
    schema.set_defaults(func=cmd_manifest_schema)

    batch = sub.add_parser("batch", help="run a batch job manifest")
    batch.add_argument("job", help="job manifest (YAML)")
    batch.add_argument("--executor", choices=["local", "ray"])
    batch.add_argument("--workers", type=int)
    batch.add_argument("--no-resume", action="store_true", help="start over (the old output is moved aside)")
    batch.add_argument("--limit", type=int, help="process at most N inputs")
    batch.add_argument("--dry-run", action="store_true", help="validate and count inputs; load no model")
    batch.set_defaults(func=cmd_batch)
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
        command.set_defaults(func=owned.value.run)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _quiet_model_loading() -> None:
    """transformers draws a progress bar for every weight load; the CLI's output is the result."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        warnings.showwarning = _show_warning
        _quiet_model_loading()
    try:
        return int(args.func(args))
    except (TaskhubError, ManifestError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure still gets a one-line message
        if args.debug:
            traceback.print_exc()
        else:
            print(f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
