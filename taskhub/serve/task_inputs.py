"""/v1/tasks inputs and outputs as JSON: media arrive as base64 or data: URIs, never as server paths; results leave JSON-ready."""

from __future__ import annotations

import base64
import binascii
import io
import urllib.parse
from typing import Any

from starlette.responses import JSONResponse

from ..api import to_json
from ..input_kinds import InputKind
from .errors import APIError

MEDIA_KEYS = frozenset({"image", "images", "audio", "url", "path", "file"})  # fields holding media in objects and chats


def decode_media(value: str, where: str, allow_local_files: bool) -> Any:
    """A data: URI or base64 string -> bytes; anything else names a file or URL, refused unless allowed."""
    if value.startswith("data:"):
        header, sep, payload = value.partition(",")
        if not sep:
            raise APIError(
                400, f"{where}: a data: URI needs a ',' before its payload.", param=where, code="invalid_value"
            )
        if header.endswith(";base64"):
            return _b64(payload, where)
        return urllib.parse.unquote_to_bytes(payload)
    try:
        return base64.b64decode(value, validate=True) if value else b""
    except (binascii.Error, ValueError):
        pass
    if allow_local_files:
        return value
    raise APIError(
        400,
        f"{where} is neither base64 nor a data: URI. Send the file's content; the server opens no paths or URLs "
        "named by clients (unless started with --allow-local-files).",
        param=where,
        code="local_files_disabled",
    )


def _b64(payload: str, where: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{where}: invalid base64 in the data: URI.", param=where, code="invalid_value") from None


def _walk(value: Any, where: str, allow: bool) -> Any:
    """Media fields (image, audio, url, ...) of mappings decoded, at any depth (chat content parts included)."""
    if isinstance(value, dict):
        return {
            key: _media(item, f"{where}.{key}", allow) if key in MEDIA_KEYS else _walk(item, f"{where}.{key}", allow)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_walk(item, f"{where}.{i}", allow) for i, item in enumerate(value)]
    return value


def _media(value: Any, where: str, allow: bool) -> Any:
    if isinstance(value, str):
        return decode_media(value, where, allow)
    if isinstance(value, list):
        return [_media(item, f"{where}.{i}", allow) for i, item in enumerate(value)]
    return _walk(value, where, allow)


def decode_inputs(inputs: Any, kind: InputKind, allow_local_files: bool) -> Any:
    """The request's `inputs` ready for the task: one input, or a list when the kind counts them as many.

    A bare string of a `by_path` kind (image, audio) is media content, never a server path."""
    many = kind.is_many(inputs)
    items = inputs if many else [inputs]
    out = []
    for i, item in enumerate(items):
        where = f"inputs.{i}" if many else "inputs"
        if kind.by_path and isinstance(item, str):
            out.append(decode_media(item, where, allow_local_files))
        else:
            out.append(_walk(item, where, allow_local_files))
    return out if many else out[0]


def jsonable(value: Any) -> Any:
    """Results as JSON values: arrays and tensors to lists, images to PNG data URIs, bytes to base64."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image (depth maps, masks)
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


class ResultResponse(JSONResponse):
    """A JSON response holding results, written as strictly as batch records are: a result JSON cannot hold
    (NaN, infinity, an object) is the StageError `to_json` raises, sent as an OpenAI-shaped error, never a crash."""

    def render(self, content: Any) -> bytes:
        return to_json(content, separators=(",", ":")).encode("utf-8")
