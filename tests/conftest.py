"""Shared fixtures. Every test session gets its own Prefect home, MLflow store and no analytics."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
# entry points started by tests without PREFECT_API_URL start a temporary server that dies
# with them, not the shared one a `dvc repro` uses (tests/integration/test_prefect_server.py tests that)
os.environ["INPNET_PREFECT_SERVER"] = "temporary"

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_homes(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Prefect and MLflow write under a per-session temp dir, never into the checkout or ~."""
    home = tmp_path_factory.mktemp("homes")
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """Prefect installs root handlers bound to the stderr of the test that first runs a flow;
    put the root logger back after each test so later tests do not log into a closed capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test: tiny models gain nothing from intra-op threads, and
    OpenMP spin-waits make a loaded 2-core machine 50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def cli_error_lines(stderr: str) -> list[str]:
    """The CLI's error messages in captured stderr (log lines from the run may precede them).

    Asserts that nothing in stderr is a traceback: bad input must give a message, not a crash.
    """
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("inpnet: error:")]
