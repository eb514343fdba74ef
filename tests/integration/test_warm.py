"""The warm stage runner: a stage forked from it behaves as the same stage started cold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import warm

# a stand-in stage: shows what it sees, then waits for a signal or exits as told
STAGE = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    Path("stage.pid").write_text(str(os.getpid()))
    print("out", os.getcwd(), os.environ.get("STAGE_WORD"), sys.argv[1:], flush=True)
    print("err", "pipelines.warm" in sys.modules, "numpy" in sys.modules, file=sys.stderr, flush=True)
    line = sys.stdin.readline().strip()
    if line == "wait":
        def on_term(signum, frame):
            print("got", signum, flush=True)
            sys.exit(7)
        signal.signal(signal.SIGTERM, on_term)
        while True:
            time.sleep(0.05)
    sys.exit(int(line or 0))
    """
)


def _env(repo_root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "INPNET_PREFECT_SERVER")}
    env["PYTHONPATH"] = str(repo_root)
    env.update(extra)
    return env


@pytest.fixture
def runner(tmp_path: Path, repo_root: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A runner that preloads numpy only (the full preload is tested on its own), on its own socket."""
    home = tmp_path / "prefect"
    sock = warm.socket_path({"PREFECT_HOME": str(home)})
    log = tmp_path / "warm.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.warm", "serve", "--socket", str(sock), "--preload", "numpy"],
            cwd=repo_root,
            env=_env(repo_root, PREFECT_HOME=str(home)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sock.exists(), log.read_text()
    try:
        yield home, proc
    finally:
        proc.terminate()
        proc.wait(10)
    assert not sock.exists(), "the runner left its socket behind after SIGTERM"


def _client(tmp_path: Path, repo_root: Path, home: Path, **extra: str) -> subprocess.Popen[str]:
    """``run_warm('stage', ...)`` in a fresh process, as ``python -m pipelines.run`` calls it."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "stage.py").write_text(STAGE)
    code = "import sys; from pipelines import warm; r = warm.run_warm('stage', ['a', 'b']); sys.exit(99 if r is None else r)"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=work,
        env=_env(repo_root, PREFECT_HOME=str(home), **extra),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


@pytest.mark.slow
def test_a_warm_stage_gets_the_clients_streams_directory_environment_and_exit_code(
    runner: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path, repo_root: Path
) -> None:
    home, _ = runner
    client = _client(tmp_path, repo_root, home, STAGE_WORD="w0rd")
    out, err = client.communicate("3\n", timeout=60)
    assert client.returncode == 3, out + err
    work = tmp_path / "work"
    assert f"out {work} w0rd ['a', 'b']" in out
    # the runner's own copy of pipelines is forgotten; what it preloaded stays imported
    assert "err False True" in err
    assert int((work / "stage.pid").read_text()) != client.pid
    assert "pid" in (tmp_path / "warm.log").read_text()


@pytest.mark.slow
def test_signals_reach_the_stage_and_a_killed_client_takes_it_along(
    runner: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path, repo_root: Path
) -> None:
    home, _ = runner
    pid_file = tmp_path / "work" / "stage.pid"

    client = _client(tmp_path, repo_root, home)
    assert client.stdin is not None
    client.stdin.write("wait\n")
    client.stdin.flush()
    _wait_for(pid_file)
    time.sleep(0.3)  # the stage has installed its handler
    client.send_signal(signal.SIGTERM)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 7, out + err
    assert f"got {int(signal.SIGTERM)}" in out

    pid_file.unlink()
    client = _client(tmp_path, repo_root, home)
    assert client.stdin is not None
    client.stdin.write("wait\n")
    client.stdin.flush()
    stage = int(_wait_for(pid_file))
    client.kill()
    client.wait(30)
    deadline = time.monotonic() + 30
    while _alive(stage) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(stage), "the stage outlived its SIGKILLed client"


@pytest.mark.slow
def test_a_client_with_another_import_time_environment_runs_cold(
    runner: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path, repo_root: Path
) -> None:
    home, _ = runner
    client = _client(tmp_path, repo_root, home, PREFECT_LOGGING_LEVEL="DEBUG")
    out, err = client.communicate("0\n", timeout=60)
    assert client.returncode == 99, out + err  # run_warm returned None: the caller runs the stage itself
    assert "refused, the environment differs in PREFECT_LOGGING_LEVEL" in (tmp_path / "warm.log").read_text()


def test_no_runner_means_cold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert warm.run_warm("pipelines.masks", []) is None
    monkeypatch.setenv("INPNET_WARM_STAGES", "0")
    assert not warm.enabled()


@pytest.mark.slow
def test_the_full_preload_starts_no_thread(repo_root: Path) -> None:
    """Forking is only safe from a single-threaded process: importing the preloaded libraries
    (torch, Prefect, MLflow, ...) must not start a thread, or the runner would refuse to serve."""
    code = (
        "import threading; from pipelines import warm; loaded = warm.preload(); "
        "print(len(loaded), threading.active_count(), [t.name for t in threading.enumerate()])"
    )
    loaded, threads, names = _python(code, repo_root).split(maxsplit=2)
    assert int(loaded) == len(warm.PRELOAD), "a preloaded module is not installed"
    assert threads == "1", names


def test_the_runner_module_imports_only_the_standard_library(repo_root: Path) -> None:
    """The client side starts fast: importing pipelines.run loads no third-party package."""
    heavy = ("torch", "prefect", "mlflow", "numpy", "inpnet")
    code = f"import sys; import pipelines.run; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    assert _python(code, repo_root).strip() == "[]"


def _python(code: str, repo_root: Path) -> str:
    """The stdout of ``python -c code`` in a fresh process (which must succeed)."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo_root,
        env=_env(repo_root),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_stages_after_the_first_run_warm_under_the_shared_server(tmp_path: Path, repo_root: Path) -> None:
    """As ``dvc repro`` runs them: the first stage starts the shared server and the runner; a
    later stage is forked from the runner, writes the same outputs, and fails the same way."""
    import hashlib

    from helpers.pipeline import pipeline_env, tiny_params, write_params

    from pipelines import prefect_server
    from pipelines.common import _PREFECT_DEFAULTS

    env = pipeline_env(None, tmp_path)
    env.pop("INPNET_PREFECT_SERVER")  # the shared server, as a plain `dvc repro` has it
    for key in _PREFECT_DEFAULTS:  # a plain shell has none of the defaults the first stage sets
        env.pop(key, None)
    env.update({"PYTHONPATH": str(repo_root), "INPNET_PREFECT_IDLE_S": "30"})
    params = tiny_params(repo_root)
    write_params(tmp_path / "params.yaml", params)
    params["masks"]["sizee"] = 32
    write_params(tmp_path / "bad.yaml", params)
    state = tmp_path / "prefect" / "inpnet-server"

    def stage(params_file: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipelines.run", "masks", "--params", params_file],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def bank() -> dict[str, str]:
        root = tmp_path / params["masks"]["out_dir"]
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
        }

    try:
        cold = stage("params.yaml")
        assert cold.returncode == 0, cold.stderr
        first = bank()
        deadline = time.monotonic() + 120  # the runner preloads while the first stage runs
        while not (state / warm.SOCKET_NAME).exists():
            assert time.monotonic() < deadline, (state / "warm.log").read_text()
            time.sleep(0.1)
        warm_run = stage("params.yaml")
        assert warm_run.returncode == 0, warm_run.stderr
        assert bank() == first and first
        # the stage's own logging, Prefect's flow-run lines included, reaches the client's stderr
        for line in ("Beginning flow run", "Finished in state Completed()"):
            assert line in cold.stderr and line in warm_run.stderr, warm_run.stderr
        log = (state / "warm.log").read_text()
        assert "pipelines.masks --params params.yaml as pid" in log, log
        bad = stage("bad.yaml")
        assert bad.returncode == 2, bad.stderr
        assert "masks.sizee" in bad.stderr and "bad.yaml" in bad.stderr and "Traceback" not in bad.stderr
        assert "pipelines.masks --params bad.yaml as pid" in (state / "warm.log").read_text()
    finally:
        prefect_server.stop(state)
