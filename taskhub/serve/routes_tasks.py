"""Every taskhub task over HTTP: GET /v1/tasks, POST /v1/tasks/{task} with {"inputs", "model", "parameters"}."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..plugins import get_registry
from .errors import APIError
from .state import read_json, state_of
from .task_inputs import ResultResponse, decode_inputs, jsonable
from .worker import Deadline, guarded

FIELDS = ("inputs", "model", "parameters")
CLIENT_FORBIDDEN = frozenset({"stream"})  # streaming is the OpenAI endpoints' job


async def list_tasks(request: Request) -> Response:
    catalog = state_of(request).catalog
    rows = [
        {
            "task": e.manifest.task,
            "aliases": e.manifest.aliases,
            "modality": e.manifest.modality,
            "input": e.manifest.input,
            "models": [m.model for m in catalog.served(e.manifest.task)],
            "description": e.manifest.description,
        }
        for e in get_registry().tasks()
        if e.manifest.task in catalog.exposed
    ]
    return JSONResponse({"object": "list", "data": rows})


async def run_task(request: Request) -> Response:
    state = state_of(request)
    deadline = Deadline(state.settings.timeout_s)
    body = await read_json(request)
    if not isinstance(body, dict) or "inputs" not in body:
        raise APIError(
            400, 'Expected a JSON object {"inputs": ..., "model"?: ..., "parameters"?: {...}}.', param="inputs"
        )
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise APIError(400, f"Unknown field {unknown[0]!r}; expected {', '.join(FIELDS)}.", param=unknown[0])
    params: Any = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise APIError(400, "parameters must be a JSON object.", param="parameters")
    for name in sorted(CLIENT_FORBIDDEN & set(params)):
        raise APIError(400, f"{name} is not available here; use the OpenAI endpoints.", param=f"parameters.{name}")
    entry = state.catalog.resolve(request.path_params["task"], body.get("model"))
    registry = get_registry()
    kind = registry.input_kinds.get(registry.task(entry.task)[0].manifest.input)
    decoded = decode_inputs(body["inputs"], kind, state.settings.allow_local_files)
    async with state.admission.slot():
        pipe = await guarded(request, state.runner.call(state.catalog.pipeline, entry), deadline)
        result = await guarded(request, state.runner.call(lambda: pipe(decoded, **params)), deadline)
    return ResultResponse({"task": entry.task, "model": pipe.model_id, "outputs": jsonable(result)})
