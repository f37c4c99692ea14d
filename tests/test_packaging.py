"""A non-editable install ships the core, every built-in plugin, the manifests and the entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_code_manifests_and_entry_points(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("taskhub-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    manifests = {p.relative_to(ROOT / "manifests").as_posix() for p in (ROOT / "manifests").rglob("*.yaml")}
    assert manifests and {f"taskhub_manifests/{m}" for m in manifests} <= names
    for package in (
        "taskhub",
        "taskhub_text",
        "taskhub_textgen",
        "taskhub_vision",
        "taskhub_audio",
        "taskhub_multimodal",
        "taskhub_rag",
    ):
        assert f"{package}/__init__.py" in names
    assert "taskhub/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[taskhub]" in text and "text = taskhub_text.plugin" in text and "rag = taskhub_rag.plugin" in text
    assert "taskhub = taskhub.cli:main" in text
