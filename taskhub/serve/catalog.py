"""Which tasks and models the server answers for, and one Pipeline per (task, model), reused by every request."""

from __future__ import annotations

import threading

from ..api import pipeline
from ..errors import UnknownTaskError
from ..pipeline import Pipeline
from ..plugins import get_registry
from .errors import APIError, not_found
from .settings import ServedModel, ServeSettings


class Catalog:
    """Model names are exactly the ids or paths the operator gave (clients can never name other files)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        registry = get_registry()
        self.task_names = sorted(e.manifest.task for e in registry.tasks())
        exposed = set(settings.tasks) if settings.tasks else set(self.task_names)
        for name in [*exposed, *(m.task for m in settings.models)]:
            registry.task(name)  # an unknown task name fails at startup, listing the known ones
        self.exposed = {registry.task(name)[0].manifest.task for name in exposed}
        self.explicit = [ServedModel(registry.task(m.task)[0].manifest.task, m.model) for m in settings.models]
        self._pipelines: dict[ServedModel, Pipeline] = {}
        self._lock = threading.Lock()

    def task(self, name: str) -> str:
        """The canonical name of an exposed task (aliases allowed), else 404."""
        try:
            canonical = get_registry().task(name)[0].manifest.task
        except UnknownTaskError:
            raise not_found("task", name, sorted(self.exposed), "task") from None
        if canonical not in self.exposed:
            raise not_found("task", name, sorted(self.exposed), "task")
        return canonical

    def served(self, task: str) -> list[ServedModel]:
        """The models of `task`: the operator's, else the task's default model (if it has one)."""
        explicit = [m for m in self.explicit if m.task == task]
        if explicit:
            return explicit
        default = get_registry().task(task)[0].manifest.model.default
        return [ServedModel(task, default)] if default else []

    def listed(self) -> list[ServedModel]:
        """What GET /v1/models shows: every explicit model, plus the chat and embedding defaults."""
        out = list(self.explicit)
        for task in ("text-generation", "feature-extraction"):
            if task in self.exposed:
                out += [m for m in self.served(task) if m not in out]
        return out

    def resolve(self, task: str, model: str | None) -> ServedModel:
        """The served model of `task` named `model` (None: the task's first), else 404 naming what exists."""
        task = self.task(task)
        served = self.served(task)
        if model is None:
            if served:
                return served[0]
            return ServedModel(task, "")  # a model-less task
        for entry in served:
            if entry.model == model:
                return entry
        raise not_found("model", model, [m.model for m in served], "model")

    def pipeline(self, entry: ServedModel) -> Pipeline:
        """The Pipeline of `entry`, created (model loaded) on first use; shared by all threads afterwards."""
        with self._lock:
            pipe = self._pipelines.get(entry)
            if pipe is None:
                pipe = pipeline(entry.task, entry.model or None, device=self.settings.device, dtype=self.settings.dtype)
                self._pipelines[entry] = pipe
            return pipe

    def loaded(self) -> list[Pipeline]:
        with self._lock:
            return list(self._pipelines.values())

    def preload(self) -> None:
        """Load every explicit model now, so a bad --model fails at startup, not on the first request."""
        for entry in self.explicit:
            self.pipeline(entry)


def task_of(catalog: Catalog, endpoint_task: str) -> str:
    """An OpenAI endpoint's task, or 404 when the operator did not expose it."""
    if endpoint_task not in catalog.exposed:
        raise APIError(404, f"This server does not expose the {endpoint_task} task.", code="task_not_found")
    return endpoint_task
