"""What `taskhub serve` is told: models to serve, address, limits, security; and its command-line flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from ..errors import ParamError

DEFAULT_TASK = "text-generation"


@dataclass(frozen=True)
class ServedModel:
    """One model the server answers for: its name in requests (the id or path given) and its task."""

    task: str
    model: str


def parse_model_spec(spec: str) -> ServedModel:
    """`ID_OR_PATH` (a text-generation model) or `TASK=ID_OR_PATH`."""
    task, sep, model = spec.partition("=")
    if not sep:
        return ServedModel(DEFAULT_TASK, spec)
    if not task or not model:
        raise ParamError(f"--model {spec!r}: expected ID_OR_PATH or TASK=ID_OR_PATH")
    return ServedModel(task, model)


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"  # localhost only unless told otherwise
    port: int = 8000
    models: tuple[ServedModel, ...] = ()  # explicit models; tasks without one use their manifest default
    tasks: tuple[str, ...] = ()  # tasks exposed; empty = every registered task
    api_key: str | None = None  # Bearer token required on every endpoint but /health
    max_running: int = 16  # requests executing at once
    max_queue: int = 64  # requests waiting for a running slot; beyond that 429
    max_body_bytes: int = 16 * 1024 * 1024  # larger request bodies get 413
    timeout_s: float = 600.0  # per request, waiting included
    retry_after_s: int = 1  # Retry-After of a 429
    grace_s: float = 10.0  # SIGTERM: in-flight requests get this long to finish, then are cancelled
    allow_local_files: bool = False  # /v1/tasks inputs may name server files (and URLs)
    device: str | None = None
    dtype: str | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[TASK=]ID_OR_PATH",
        help="a model to serve (repeatable); without TASK= a text-generation model",
    )
    parser.add_argument("--task", action="append", default=[], help="expose only these tasks (repeatable)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $TASKHUB_API_KEY)")
    parser.add_argument("--max-running", type=int, default=16, help="requests executing at once")
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond that get 429")
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024, help="larger bodies get 413")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request, queueing included")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds in-flight requests get on SIGTERM")
    parser.add_argument("--allow-local-files", action="store_true", help="let /v1/tasks inputs name server files")
    parser.add_argument("--device")
    parser.add_argument("--dtype", help="float32, bfloat16 or float16")


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    for name in ("max_running", "max_queue", "max_body_bytes"):
        if getattr(args, name) < (0 if name == "max_queue" else 1):
            raise ParamError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    return ServeSettings(
        host=args.host,
        port=args.port,
        models=tuple(parse_model_spec(m) for m in args.model),
        tasks=tuple(args.task),
        api_key=args.api_key or os.environ.get("TASKHUB_API_KEY") or None,
        max_running=args.max_running,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        timeout_s=args.timeout,
        grace_s=args.grace,
        allow_local_files=args.allow_local_files,
        device=args.device,
        dtype=args.dtype,
    )
