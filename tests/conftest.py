"""Session-wide test setup: offline hub, no network, quiet model loading."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

# Tiny models run fastest on one thread, and parallel test processes do not oversubscribe cores.
torch.set_num_threads(1)

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Ray tests start a local cluster: they belong to the slow tier too (`pytest -m "not slow"` skips them)."""
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def fresh_caches():
    """Drop cached pipelines/models before and after a test that counts loads."""
    import taskhub

    taskhub.clear_caches()
    yield
    taskhub.clear_caches()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One real local Ray cluster (2 CPUs) for every Ray test of the run.

    Started at the first Ray test, while the test process is still small: starting Ray forks
    its head processes from this process, and a fork late in a long run (many models loaded)
    can fail with ENOMEM.
    """
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
