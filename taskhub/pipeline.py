"""Pipeline: resolve a task's manifest, load its model once, run preprocess -> model -> postprocess."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from .errors import ParamError, StageError, TaskhubError
from .manifest import TaskManifest
from .models import ModelCache, ModelSource, model_cache, parse_dtype, resolve_device, resolve_model_path
from .plugins import get_registry
from .registry import StageSpec

if TYPE_CHECKING:
    import torch

CORE_PARAMS = ("batch_size",)
SORT_WINDOW_BATCHES = 32  # length sorting looks at this many batches of preprocessed items at a time


@dataclass(frozen=True)
class StageContext:
    """What a stage sees besides its items and params."""

    model: Any  # whatever the task's model loader returned (None for model-less tasks); shared by
    # every call and thread: stages read it, never write to it
    task: TaskManifest
    device: str  # a device this machine has ("cpu", "cuda:0", ...)
    dtype: torch.dtype | None  # None: the checkpoint's own
    model_id: str | None


@dataclass(frozen=True)
class BoundStage:
    """A stage of this task with the params fixed at construction (manifest, then pipeline())."""

    spec: StageSpec
    base: dict[str, Any]
    default: BaseModel

    def params(self, overrides: dict[str, Any]) -> BaseModel:
        if not overrides:
            return self.default
        return _validate_params(self.spec, {**self.base, **overrides})


def _validate_params(spec: StageSpec, values: dict[str, Any]) -> BaseModel:
    try:
        return spec.params_model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ParamError(f"Invalid params for stage {spec.name!r}: {problems}") from None


class TaskPlan:
    """A task's stages with their params fixed, and param routing; loads no model."""

    def __init__(self, task: str, params: dict[str, Any] | None = None) -> None:
        registry = get_registry()
        entry, name_params = registry.task(task)
        self.manifest = entry.manifest
        self.task = entry.manifest.task
        specs = [(registry.stages.get(ref.stage), dict(ref.params)) for ref in entry.manifest.stage_refs()]
        self.stages = [BoundStage(spec, base, _validate_params(spec, base)) for spec, base in specs]
        fixed = self.route({**name_params, **(params or {})})
        self.stages = [
            BoundStage(s.spec, {**s.base, **fixed.get(i, {})}, s.params(fixed.get(i, {})))
            for i, s in enumerate(self.stages)
        ]

    @property
    def param_names(self) -> list[str]:
        """Every call parameter this task accepts."""
        names = {name for s in self.stages for name in s.spec.params_model.model_fields}
        return sorted(names | set(CORE_PARAMS))

    def route(self, params: dict[str, Any]) -> dict[int, dict[str, Any]]:
        """Send each param to the one stage whose params model declares it."""
        routed: dict[int, dict[str, Any]] = {}
        for name, value in params.items():
            owners = [i for i, s in enumerate(self.stages) if name in s.spec.params_model.model_fields]
            if not owners:
                raise ParamError(
                    f"Unknown parameter {name!r} for task {self.task!r}. Valid parameters: {', '.join(self.param_names)}"
                )
            if len(owners) > 1:
                stages = ", ".join(self.stages[i].spec.name for i in owners)
                raise ParamError(f"Parameter {name!r} is ambiguous for task {self.task!r}: declared by stages {stages}")
            routed.setdefault(owners[0], {})[name] = value
        return routed

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise ParamError unless every param is known and valid for its stage."""
        params = {k: v for k, v in params.items() if k not in CORE_PARAMS}
        routed = self.route(params)
        for i, stage in enumerate(self.stages):
            stage.params(routed.get(i, {}))

    def stage_params(self, params: dict[str, Any]) -> list[BaseModel]:
        routed = self.route(params)
        return [s.params(routed.get(i, {})) for i, s in enumerate(self.stages)]


class Pipeline:
    """A task bound to one loaded model; call it on one input or a list of inputs."""

    def __init__(
        self,
        task: str,
        model: str | None = None,
        *,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        batch_size: int | None = None,
        **params: Any,
    ) -> None:
        _check_arguments(model, revision, trust_remote_code, allow_pickle)
        self.plan = TaskPlan(task, params)
        self.manifest = self.plan.manifest
        self.task = self.plan.task
        self.batch_size = _check_batch_size(self.manifest.batching.batch_size if batch_size is None else batch_size)
        self.device = resolve_device(device)
        self.dtype = parse_dtype(dtype)
        self.model_id = os.fspath(model) if model else self.manifest.model.default
        self.model_key: tuple[Any, ...] | None = None  # the model cache's key of self.model
        self.model = self._load_model(revision, trust_remote_code, allow_pickle)
        self.context = StageContext(self.model, self.manifest, self.device, self.dtype, self.model_id)

    def _load_model(self, revision: str | None, trust_remote_code: bool, allow_pickle: bool) -> Any:
        spec = self.manifest.model
        if self.model_id is None or spec.loader is None:
            return None
        registry = get_registry()
        revision = revision or spec.revision
        source = ModelSource(
            model_id=self.model_id,
            path=resolve_model_path(self.model_id, revision, registry, allow_pickle, trust_remote_code),
            revision=revision,
            device=self.device,
            dtype=self.dtype,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
            options=dict(spec.options),
        )
        self.model_key = ModelCache.key(spec.loader, source)
        return model_cache.load(registry, spec.loader, source)

    @property
    def param_names(self) -> list[str]:
        return self.plan.param_names

    def __call__(self, inputs: Any, *, batch_size: int | None = None, **params: Any) -> Any:
        kind = get_registry().input_kinds.get(self.manifest.input)
        single = not kind.is_many(inputs)
        items = [inputs] if single else list(inputs)
        self.check_inputs(items)
        results = self.run_items(items, batch_size=batch_size, **params)
        return results[0] if single else results

    def check_inputs(self, items: Sequence[Any], positions: Sequence[int] | None = None) -> None:
        """Reject an input no stage of the task's input kind can take (BadInputError "Input N ...",
        N: its index in `items`, or `positions[i]` when the caller -- a batch job -- knows better)."""
        kind = get_registry().input_kinds.get(self.manifest.input)
        for index, item in enumerate(items):
            kind.check_input(item, index if positions is None else positions[index])

    def run_items(
        self,
        items: Sequence[Any],
        *,
        batch_size: int | None = None,
        positions: Sequence[int] | None = None,
        **params: Any,
    ) -> list[Any]:
        """Results for `items` in input order; batches are formed by length when the task asks.

        A stage error about "Input N" (N: its index in the batch) is renumbered to the item's
        position in the call -- or in `positions[i]` when the caller (a batch job) knows better.
        """
        size = _check_batch_size(self.batch_size if batch_size is None else batch_size)
        places = list(range(len(items)) if positions is None else positions)
        bound = list(zip(self.plan.stages, self.plan.stage_params(params)))
        if not items:  # params are checked above; no stage is asked to handle an empty batch
            return []
        n_pre = len(self.manifest.preprocess)
        pre, rest = bound[:n_pre], bound[n_pre:]
        results: list[Any] = [None] * len(items)
        if self.manifest.batching.continuous:
            prepared = [
                x
                for start in range(0, len(items), size)
                for x in self._run(pre, list(items[start : start + size]), places[start : start + size])
            ]
            return self._run(rest, prepared, places)
        if self.manifest.batching.sort_by_length:
            window = size * SORT_WINDOW_BATCHES
            for first in range(0, len(items), window):
                end = first + window
                self._run_sorted(pre, rest, items[first:end], places[first:end], size, first, results)
        else:
            for start in range(0, len(items), size):
                batch = list(items[start : start + size])
                results[start : start + len(batch)] = self._run(pre + rest, batch, places[start : start + size])
        return results

    def _run_sorted(
        self,
        pre: list[tuple[BoundStage, BaseModel]],
        rest: list[tuple[BoundStage, BaseModel]],
        window: Sequence[Any],
        places: list[int],
        size: int,
        offset: int,
        results: list[Any],
    ) -> None:
        """Preprocess one window of items, then run the rest in batches of similar `sort_length`,
        so padding stays small while only one window of preprocessed items is held at once."""
        prepared = [
            x
            for start in range(0, len(window), size)
            for x in self._run(pre, list(window[start : start + size]), places[start : start + size])
        ]
        order = sorted(range(len(prepared)), key=lambda i: -sort_length(prepared[i]))
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            for i, out in zip(chunk, self._run(rest, [prepared[i] for i in chunk], [places[i] for i in chunk])):
                results[offset + i] = out

    def _run(self, stages: list[tuple[BoundStage, BaseModel]], batch: list[Any], places: list[int]) -> list[Any]:
        import torch

        with torch.inference_mode():
            for stage, params in stages:
                try:
                    out = stage.spec.func(batch, params, self.context)
                except TaskhubError as exc:
                    raise _renumbered(exc, places) from exc.__cause__
                except Exception as exc:  # a bug or a resource error: still a TaskhubError, cause kept
                    raise StageError(f"stage {stage.spec.name!r} failed: {type(exc).__name__}: {exc}") from exc
                if len(out) != len(batch):
                    raise TaskhubError(
                        f"stage {stage.spec.name!r} returned {len(out)} items for a batch of {len(batch)}"
                    )
                batch = list(out)
        return batch

    def __repr__(self) -> str:
        return f"Pipeline(task={self.task!r}, model={self.model_id!r}, device={self.device!r})"


_INPUT_INDEX = re.compile(r"\bInput (\d+)\b")


def _renumbered(exc: TaskhubError, places: list[int]) -> TaskhubError:
    """`exc` with every "Input N" (N: index in the batch) rewritten to "Input places[N]"."""

    def place(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return f"Input {places[index]}" if index < len(places) else match.group(0)

    message = _INPUT_INDEX.sub(place, str(exc))
    if message != str(exc):
        exc.args = (message,)
    return exc


def _check_batch_size(size: Any) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ParamError(f"batch_size must be a positive integer, got {size!r}")
    return size


def sort_length(item: Any) -> int:
    """A preprocessed item's explicit sort key: its `sort_length` (tokens, samples), 0 if it has none.

    Items without one keep their input order; nothing else about an item is guessed (no len())."""
    length = getattr(item, "sort_length", 0)
    return length if isinstance(length, int) and not isinstance(length, bool) else 0


def _check_arguments(model: Any, revision: Any, trust_remote_code: Any, allow_pickle: Any) -> None:
    """Wrong types are ParamErrors up front; a safety flag must be a real bool ("false" is a truthy string)."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise ParamError(f"model must be a hub id or a folder path, got {type(model).__name__} {model!r}")
    if revision is not None and not isinstance(revision, str):
        raise ParamError(f"revision must be a string (a branch, tag or commit), got {revision!r}")
    for name, flag in (("trust_remote_code", trust_remote_code), ("allow_pickle", allow_pickle)):
        if not isinstance(flag, bool):
            raise ParamError(f"{name} must be True or False, got {flag!r}")
