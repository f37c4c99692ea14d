"""The samples/rag index built once per test session with the packaged MiniLM, and the evaluation questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from taskhub_rag.api import build_index

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DOCS = ROOT / "samples" / "rag" / "docs"
QUESTIONS = [
    json.loads(line) for line in (ROOT / "samples" / "rag" / "questions.jsonl").read_text().splitlines() if line.strip()
]


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """samples/rag/docs indexed with 64-token chunks (several per document) and default settings otherwise."""
    path = tmp_path_factory.mktemp("rag") / "samples"
    build_index(path, str(SAMPLE_DOCS / "*.md"), chunking={"chunk_tokens": 64, "overlap": 16}, progress=False)
    return path
