"""A ``dvc repro`` killed with SIGKILL (its whole process group) resumes without losing work.

- During the download (``data.source: places365`` on the local Range server): the re-run
  continues the ``.part`` file with a Range request from its size, and the checksums pass.
- During training, after a checkpoint: the re-run continues from it, and the final weights
  are byte-identical to an uninterrupted run's.

Both rely on ``persist: true`` in dvc.yaml; without it DVC deletes the outputs first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.pipeline import VENV_BIN, clone_worktree, pipeline_env, run_dvc, shared_prefect_server
from helpers.range_server import RangeServer, Route
from helpers.remote_data import places365_files, set_params, use_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def prefect_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_prefect_server(request.config, tmp_path_factory)


def start_dvc(args: list[str], repo: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    log = (repo.parent / "killed.log").open("w")
    return subprocess.Popen(
        [str(VENV_BIN / "dvc"), *args],
        cwd=repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the stage commands die with it
    )


def kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], repo: Path, timeout: float = 600) -> None:
    """SIGKILL ``proc``'s whole process group once ``ready()``; fails if it exits first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            log = (repo.parent / "killed.log").read_text()[-3000:]
            pytest.fail(f"dvc exited {proc.returncode} before it could be killed:\n{log}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"not ready to be killed after {timeout:.0f} s")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_download_resumes_the_part_file(tmp_path: Path, prefect_api: str) -> None:
    repo = clone_worktree(tmp_path / "repo")
    env = pipeline_env(prefect_api, tmp_path)
    files = places365_files(tmp_path / "server")
    train_name = "train_large_places365standard.tar"
    hold = len(files[train_name]) // 2
    with RangeServer() as srv:
        for name, body in files.items():
            srv.routes[f"/p365/{name}"] = Route(body)
        train_route = srv.routes[f"/p365/{train_name}"]
        train_route.hold_after = hold  # half the train tar arrives, then the server stalls
        set_params(repo, lambda p: use_server(p, srv.url("/p365"), files))
        part = repo / "data" / "raw" / f"{train_name}.part"

        proc = start_dvc(["repro", "data"], repo, env)
        kill_when(proc, lambda: part.is_file() and part.stat().st_size >= hold, repo)
        train_route.release.set()
        assert part.stat().st_size == hold
        before = len(srv.requests)

        run_dvc(["repro", "data"], repo, env)
        # only the train tar is requested again, from where the part ends
        assert srv.requests[before:] == [(f"/p365/{train_name}", f"bytes={hold}-")]
    raw = repo / "data" / "raw"
    for name, body in files.items():
        assert (raw / name).read_bytes() == body  # and fetch verified each md5 before renaming
    assert not part.exists()
    assert json.loads(run_dvc(["status", "--json", "data"], repo, env).stdout) == {}
    md5 = hashlib.md5(
        files[train_name], usedforsecurity=False
    ).hexdigest()  # data/raw is cache: false: no copy in .dvc/cache
    assert not (repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists()


RESUMED = re.compile(r"resuming inpnet_tiny from step (\d+)")


def _weights(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.safetensors"))}


def test_killed_training_resumes_and_matches_an_uninterrupted_run(tmp_path: Path, prefect_api: str) -> None:
    repo = clone_worktree(tmp_path / "repo")
    steps = 20

    def longer(p: dict[str, Any]) -> None:
        p["pipeline"]["variants"] = ["inpnet_tiny"]
        p["variants"]["inpnet_tiny"]["train"]["max_steps"] = steps
        p["train"].update(checkpoint_every=2, val_every=10, sample_every=10)

    set_params(repo, longer)
    env = pipeline_env(prefect_api, tmp_path)
    run_dvc(["repro", "shard@train", "shard@val", "masks"], repo, env)
    ckpt = repo / "models" / "inpnet_tiny"

    def mid_run() -> bool:
        try:
            meta = json.loads((ckpt / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        if meta["finished"]:
            pytest.fail(f"training finished before it could be killed; raise max_steps above {steps}")
        return True

    proc = start_dvc(["repro", "train@inpnet_tiny"], repo, env)
    kill_when(proc, mid_run, repo)

    info_env = {**env, "INPNET_LOG_LEVEL": "INFO"}
    resumed = run_dvc(["repro", "train@inpnet_tiny"], repo, info_env)
    match = RESUMED.search(resumed.stdout + resumed.stderr)
    assert match, (resumed.stdout + resumed.stderr)[-3000:]
    assert 2 <= int(match.group(1)) < steps
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["step"] == steps and meta["finished"]
    after_resume = _weights(ckpt)
    assert "model.safetensors" in after_resume

    # forced re-run: a finished checkpoint is not reused, it trains from step 0 uninterrupted
    fresh = run_dvc(["repro", "-f", "-s", "train@inpnet_tiny"], repo, info_env)
    assert "starting from step 0, not resuming" in fresh.stdout + fresh.stderr
    assert not RESUMED.search(fresh.stdout + fresh.stderr)
    assert _weights(ckpt) == after_resume
