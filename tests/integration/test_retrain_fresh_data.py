"""Scheduled retraining sees fresh data: a changed remote file (new ETag on the local HTTP
server) retrains, an unchanged one does not and says so; results go to a DVC remote (a
local folder) and the experiment to a bare git remote."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers.pipeline import _git, clone_worktree, pipeline_env, run_dvc, shared_prefect_server
from helpers.places_tar import build_train_tar
from helpers.range_server import RangeServer, Route
from helpers.remote_data import places365_files, set_params, use_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TARGET = "train@inpnet_tiny"


def retrain(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.retrain", "run", "--repo", str(repo), "--targets", TARGET],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    start = proc.stdout.rindex("\n{") + 1 if "\n{" in proc.stdout else proc.stdout.index("{")
    result: dict[str, Any] = json.loads(proc.stdout[start:])
    result["log"] = proc.stderr
    return result


def test_changed_remote_file_retrains_and_unchanged_does_not(
    tmp_path: Path, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    api = shared_prefect_server(request.config, tmp_path_factory)
    repo = clone_worktree(tmp_path / "repo")
    env = pipeline_env(api, tmp_path)
    files = places365_files(tmp_path / "server")
    train_name = "train_large_places365standard.tar"
    store, bare = tmp_path / "dvc-store", tmp_path / "origin.git"
    _git(["init", "-q", "--bare", str(bare)], tmp_path)
    _git(["remote", "add", "origin", str(bare)], repo)
    run_dvc(["remote", "add", "store", str(store)], repo, env)
    with RangeServer() as srv:
        for name, body in files.items():
            srv.routes[f"/p365/{name}"] = Route(body)

        def configure(p: dict[str, Any]) -> None:
            use_server(p, srv.url("/p365"), files, md5=False)  # the mirror's file may change
            p["pipeline"]["variants"] = ["inpnet_tiny"]
            p["schedule"]["dvc_remote"] = "store"

        set_params(repo, configure)
        _git(["add", "-A"], repo)
        _git(["commit", "-q", "-m", "remotes", "--allow-empty"], repo)

        first = retrain(repo, env)
        assert first["retrained"] and TARGET in first["stages_run"] and "data" in first["stages_run"]
        exp = first["experiment"]
        assert exp and "refs/exps/" in _git(["ls-remote", str(bare)], tmp_path)
        assert any(p.is_file() for p in store.rglob("*"))  # dvc push wrote the cache to the remote
        weights = (repo / "models" / "inpnet_tiny" / "model.safetensors").read_bytes()
        gets = len(srv.requests)

        unchanged = retrain(repo, env)
        assert unchanged["retrained"] is False and unchanged["experiment"] is None
        assert unchanged["message"] == "nothing changed, no retrain"
        assert "nothing changed" in unchanged["log"]
        assert len(srv.requests) == gets  # nothing downloaded
        assert (repo / "models" / "inpnet_tiny" / "model.safetensors").read_bytes() == weights

        fresh = build_train_tar(tmp_path / "fresh", n_good=24, seed=7, bad=False).tar.read_bytes()
        srv.routes[f"/p365/{train_name}"] = Route(fresh)  # a new file, a new ETag
        changed = retrain(repo, env)
    assert changed["retrained"] and changed["experiment"] not in (None, exp)
    assert {"data", "shard@train", TARGET} <= set(changed["stages_run"])
    assert "data" in changed["changed"]
    raw = repo / "data" / "raw" / train_name
    assert hashlib.sha256(raw.read_bytes()).digest() == hashlib.sha256(fresh).digest()
    assert (repo / "models" / "inpnet_tiny" / "model.safetensors").read_bytes() != weights
    exps = run_dvc(["exp", "list", "--name-only"], repo, env).stdout.split()
    assert exp in exps and changed["experiment"] in exps
