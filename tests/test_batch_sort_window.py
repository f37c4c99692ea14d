"""Length-sorted batching sorts within a window of 32 batches, by the items' explicit `sort_length`,
so a large call (or a job's batch) never holds every preprocessed item at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fake_plugins import FakePlugin, installed, write_manifest

import taskhub
from taskhub.pipeline import SORT_WINDOW_BATCHES


@dataclass
class Prepared:
    text: str
    sort_length: int


class Recorder(FakePlugin):
    """Preprocess makes Prepared items (or plain dicts); the model stage reports what it saw."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.events: list[tuple[str, list[Any]]] = []

    @taskhub.hookimpl
    def register_stages(self, register: Any) -> None:
        def prepare(items: list[str], params: Any, ctx: Any) -> list[Prepared]:
            self.events.append(("pre", list(items)))
            return [Prepared(t, len(t)) for t in items]

        def as_dicts(items: list[str], params: Any, ctx: Any) -> list[dict[str, Any]]:
            self.events.append(("pre", list(items)))
            return [{"t": t, **{f"k{n}": n for n in range(len(t))}} for t in items]  # len() would differ

        def model(items: list[Any], params: Any, ctx: Any) -> list[str]:
            texts = [i.text if isinstance(i, Prepared) else i["t"] for i in items]
            self.events.append(("model", texts))
            return [t.upper() for t in texts]

        register("win.prepare", prepare)
        register("win.as_dicts", as_dicts)
        register("win.model", model)


def _manifest(folder: Path, name: str, pre: str) -> None:
    write_manifest(
        folder,
        name,
        f"task: {name}\nmodality: text\ninput: text\nbatching: {{sort_by_length: true, batch_size: 2}}\n"
        f"preprocess:\n  - stage: win.{pre}\nmodel_stage:\n  stage: win.model\n",
    )


def test_sorting_happens_within_a_window_and_results_keep_input_order(tmp_path: Path) -> None:
    _manifest(tmp_path, "windowed", "prepare")
    plugin = Recorder(tmp_path)
    window = 2 * SORT_WINDOW_BATCHES
    texts = ["x" * (1 + (n * 37) % 23) + str(n) for n in range(window * 2 + 10)]
    with installed(plugin, "win"):
        assert taskhub.run_task("windowed", texts) == [t.upper() for t in texts]
    held, most_held = 0, 0
    modelled: list[list[str]] = []
    for kind, batch in plugin.events:
        held += len(batch) if kind == "pre" else -len(batch)
        most_held = max(most_held, held)
        if kind == "model":
            modelled.append(batch)
    assert most_held == window  # never more than one window of preprocessed items at once
    # within each window the batches go longest first; across windows the input order holds
    for start, end in ((0, window), (window, 2 * window), (2 * window, len(texts))):
        expected = sorted(texts[start:end], key=len, reverse=True)
        got = [t for batch in modelled[start // 2 : (end + 1) // 2] for t in batch]
        assert [len(t) for t in got] == [len(t) for t in expected]
        assert sorted(got) == sorted(texts[start:end])


def test_items_without_a_sort_length_keep_their_order(tmp_path: Path) -> None:
    _manifest(tmp_path, "unkeyed", "as_dicts")
    plugin = Recorder(tmp_path)
    texts = ["a", "bbbbbb", "cc", "dddd", "e"]
    with installed(plugin, "win"):
        assert taskhub.run_task("unkeyed", texts) == [t.upper() for t in texts]
    assert [b for kind, b in plugin.events if kind == "model"] == [["a", "bbbbbb"], ["cc", "dddd"], ["e"]]
