"""`taskhub index build|info|list|delete`: the rag plugin's CLI subcommands (mounted through register_commands)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from taskhub.errors import ParamError


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="index_command", required=True)
    build = sub.add_parser("build", help="add new and changed documents to an index (created on first use)")
    build.add_argument("index", metavar="INDEX", help="folder path, or a bare name under $TASKHUB_HOME/indexes")
    build.add_argument(
        "--inputs", action="append", required=True, metavar="GLOB", help="files to index ('docs/**/*.md'); repeatable"
    )
    build.add_argument(
        "--chunker", choices=["tokens", "sentences", "markdown"], help="default: tokens (or the index's)"
    )
    build.add_argument("--chunk-tokens", type=int, help="tokens per chunk (default 256, at most the model's limit)")
    build.add_argument("--overlap", type=int, help="tokens shared by neighbouring chunks (default 32)")
    build.add_argument("--model", help="embedding model (default: the packaged all-MiniLM-L6-v2, or the index's)")
    build.add_argument("--revision")
    build.add_argument("--device")
    build.add_argument(
        "--dtype", choices=["float32", "bfloat16"], help="encoder weights (default float32, or the index's)"
    )
    build.add_argument("--sync", action="store_true", help="also remove documents the globs no longer match")
    build.add_argument(
        "--meta", action="append", default=[], metavar="KEY=VALUE", help="metadata on every document (repeatable)"
    )
    ann = build.add_mutually_exclusive_group()
    ann.add_argument("--ann", dest="ann", action="store_true", default=None, help="build the IVF (ANN) index now")
    ann.add_argument(
        "--no-ann", dest="ann", action="store_false", help="no ANN index (default: one from 200,000 chunks)"
    )
    build.add_argument("--write-every", type=int, default=512, metavar="N", help="chunks per commit (default 512)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, text in (("info", "what an index holds and how it was built"), ("delete", "delete an index folder")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("index", metavar="INDEX")
    sub.add_parser("list", help="the indexes kept under $TASKHUB_HOME/indexes")


def run(args: argparse.Namespace) -> int:
    from .store import IndexStore, list_indexes

    if args.index_command == "build":
        print(json.dumps(_build(args), indent=2))
    elif args.index_command == "info":
        print(json.dumps(IndexStore.open(args.index).info(), indent=2))
    elif args.index_command == "list":
        for path in list_indexes():
            info = IndexStore.open(path).info()
            print(f"{path.name:<24} {info['chunks']:>9} chunks  {info['documents']:>7} docs  {info['embedding_model']}")
    elif args.index_command == "delete":
        store = IndexStore.open(args.index)
        store.delete()
        print(f"deleted {store.path}")
    return 0


def _build(args: argparse.Namespace) -> dict[str, Any]:
    from .build import build_index

    metadata = dict(_key_value(m) for m in args.meta)
    chosen = {
        k: v
        for k, v in (("chunker", args.chunker), ("chunk_tokens", args.chunk_tokens), ("overlap", args.overlap))
        if v is not None
    }
    if args.write_every < 1:
        raise ParamError(f"--write-every must be >= 1, got {args.write_every}")
    return build_index(
        args.index,
        args.inputs,
        model=args.model,
        revision=args.revision,
        chunking=chosen,
        sync=args.sync,
        metadata=metadata or None,
        ann=args.ann,
        write_every=args.write_every,
        device=args.device,
        dtype=args.dtype,
        progress=not args.quiet,
    )


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ParamError(f"--meta {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value
