"""The scheduled retraining deployment against a Prefect server on 127.0.0.1: served from a
subprocess (``python -m pipelines.retrain serve``), it carries the cron from params and a
concurrency limit of 1, and one triggered run (``dvc exp run masks``, cheap) completes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.pipeline import clone_worktree, pipeline_env, shared_prefect_server, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FULL_NAME = "retrain/scheduled-retrain"


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A tiny clone whose retraining deployment is being served; yields (repo, api_url)."""
    api_url = shared_prefect_server(request.config, tmp_path_factory)
    repo = clone_worktree(tmp_path_factory.mktemp("retrain") / "repo")
    env = pipeline_env(api_url, repo.parent)
    log = (repo.parent / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.retrain", "serve", "--repo", str(repo)],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_deployment(api_url, proc, repo.parent / "serve.log")
        yield repo, api_url
    finally:
        stop_process(proc)
        log.close()


def _wait_for_deployment(api_url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                client.read_deployment_by_name(FULL_NAME)
                return
            except ObjectNotFound:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"deployment {FULL_NAME} not created after {timeout:.0f} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(1)


def test_deployment_has_the_cron_from_params_and_limit_1(served: tuple[Path, str]) -> None:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    repo, api_url = served
    schedule = yaml.safe_load((repo / "params.yaml").read_text())["schedule"]
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(FULL_NAME)
    (sched,) = deployment.schedules
    assert sched.schedule.cron == schedule["cron"] and sched.schedule.timezone == schedule["timezone"]
    assert sched.active
    # Prefect 3 keeps a deployment's concurrency limit as a global concurrency limit
    assert deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
    assert deployment.parameters["repo"] == str(repo.resolve())


def test_one_triggered_run_completes(served: tuple[Path, str]) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    repo, api_url = served
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        flow_run = run_deployment(
            FULL_NAME, parameters={"targets": ["masks"], "exp_name": "retrain-test"}, timeout=300, poll_interval=2
        )
    assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    assert (repo / "data" / "masks" / "manifest.json").is_file()  # dvc exp run applies its results to the workspace
    exps = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "exp", "list", "--name-only"],
        cwd=repo,
        env=pipeline_env(api_url, repo.parent),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "retrain-test" in exps.stdout
