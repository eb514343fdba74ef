"""Shared helpers for the pipeline tests: a throw-away copy of the repository on a tiny
profile, a Prefect server on 127.0.0.1, and ``dvc`` run inside the copy.

The copy holds the working tree as git sees it (tracked files plus untracked files that are
not ignored), committed in a fresh git repository, so the tests exercise the code being
worked on without touching this checkout's data, models, reports or DVC cache.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

TESTS_DIR = Path(__file__).resolve().parents[1]
TINY_OVERRIDES = TESTS_DIR / "fixtures" / "params_tiny.yaml"
VENV_BIN = Path(sys.executable).parent


def repo_toplevel() -> Path:
    out = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=TESTS_DIR, capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` onto ``base``: mappings merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_params(repo: Path) -> dict[str, Any]:
    """The repository's params.yaml with the tiny variants and the tiny test profile merged on top."""
    from helpers.params import repo_params_with_tiny_variants

    return deep_merge(repo_params_with_tiny_variants(repo), yaml.safe_load(TINY_OVERRIDES.read_text()))


def write_params(path: Path, params: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _git(args: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@localhost",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@localhost",
    }
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout


def clone_worktree(dst: Path, *, src: Path | None = None) -> Path:
    """Copy ``src``'s working tree (what git would commit, untracked included) into a fresh
    git repository at ``dst`` on the tiny profile, committed, with DVC initialised."""
    src = src or repo_toplevel()
    listed = _git(["ls-files", "-z", "--cached", "--others", "--exclude-standard"], src).split("\0")
    dst.mkdir(parents=True, exist_ok=True)
    for rel in filter(None, listed):
        source = src / rel
        if not source.is_file():  # deleted in the working tree but still in the index
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    for generated in ("dvc.lock",):  # the lock of this checkout describes other params
        (dst / generated).unlink(missing_ok=True)
    write_params(dst / "params.yaml", tiny_params(dst))
    _git(["init", "-q", "-b", "main"], dst)
    if not (dst / ".dvc" / "config").is_file():
        run_dvc(["init", "-q"], dst)
    _git(["add", "-A"], dst)
    _git(["commit", "-q", "-m", "tiny profile"], dst)
    return dst


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pipeline_env(api_url: str | None, home: Path) -> dict[str, str]:
    """Environment for ``dvc``/flow subprocesses: this venv first on PATH, MLflow and Prefect
    state under ``home``, no analytics."""
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(home / "prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "INPNET_LOG_LEVEL": "WARNING",
    }
    if api_url:
        env["PREFECT_API_URL"] = api_url
    else:  # each process its own temporary server: nothing outlives the test
        env.pop("PREFECT_API_URL", None)
        env["INPNET_PREFECT_SERVER"] = "temporary"
    return env


def run_dvc(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``dvc ARGS`` in ``cwd``; raises with the output tail when it fails. On a timeout or an
    interrupt the whole process group (the stage commands too) is stopped."""
    cmd = [str(VENV_BIN / "dvc"), *args]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env or pipeline_env(None, cwd / ".homes"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        stop_process(proc, grace=5)
        raise
    if proc.returncode != 0:
        tail = "\n".join((out + err).splitlines()[-60:])
        raise AssertionError(f"dvc {' '.join(args)} exited {proc.returncode} in {cwd}:\n{tail}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@contextlib.contextmanager
def prefect_server(home: Path, *, timeout: float = 120) -> Iterator[str]:
    """A Prefect server on 127.0.0.1 with its own PREFECT_HOME and database; yields the API URL."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**pipeline_env(None, home), "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)}
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    log = (home / "prefect-server.log").open("w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited {proc.returncode}: {(home / 'prefect-server.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:  # noqa: S310 - a local http:// URL
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server not healthy on {api_url} after {timeout:.0f} s")
            time.sleep(0.5)
        yield api_url
    finally:
        stop_process(proc)
        log.close()


def stop_process(proc: subprocess.Popen[Any], grace: float = 15) -> None:
    """Interrupt ``proc``'s process group, then kill it if it does not exit in ``grace`` s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 2)  # SIGINT: servers shut down cleanly
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()


_SHARED: dict[str, Any] = {}


def shared_prefect_server(config: Any, tmp_path_factory: Any) -> str:
    """One Prefect server for every slow pipeline test of the session, stopped when the
    session ends (``config.add_cleanup``); start-up costs 15-60 s on a loaded 2-core machine."""
    if "api_url" not in _SHARED:
        home = tmp_path_factory.mktemp("prefect-server")
        cm = prefect_server(home)
        _SHARED["api_url"] = cm.__enter__()
        _SHARED["home"] = home

        def stop() -> None:
            cm.__exit__(None, None, None)
            _SHARED.clear()

        config.add_cleanup(stop)
    return _SHARED["api_url"]
