"""The shared Prefect server: one server for every stage of a run, gone after the run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import prefect_server
from pipelines.prefect_server import SharedServer, _live_leases

PROBE = """
import sys
from pipelines.common import base_parser, run_entry
from prefect import flow

@flow(name="probe")
def probe():
    from prefect.settings import PREFECT_API_URL
    print("API", PREFECT_API_URL.value(), flush=True)

sys.exit(run_entry(lambda args: probe(), base_parser("probe")))
"""


def _run_probe(script: Path, env: dict[str, str], repo_root: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=repo_root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow
def test_stages_share_one_server_that_stops_when_idle(tmp_path: Path, repo_root: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    home = tmp_path / "prefect"
    state = home / "inpnet-server"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "INPNET_PREFECT_SERVER": "shared",
            # long enough that the second probe (10+ s of imports on a loaded 2-core machine) finds it
            "INPNET_PREFECT_IDLE_S": "30",
            "PYTHONPATH": str(repo_root),
            "INPNET_LOG_LEVEL": "INFO",
        }
    )
    try:
        first = _run_probe(script, env, repo_root)
        record = SharedServer.read(state)
        assert record is not None and record.usable(), (state / "server.log").read_text()
        second = _run_probe(script, env, repo_root)
        urls = [
            line.split()[1] for out in (first, second) for line in out.stdout.splitlines() if line.startswith("API ")
        ]
        assert urls == [record.api_url, record.api_url]  # both flows talked to the one server
        assert "starting the shared Prefect server" in first.stderr
        assert "starting the shared Prefect server" not in second.stderr
        assert f"using the shared Prefect server at {record.api_url}" in second.stderr
        assert SharedServer.read(state) == record  # the second stage did not start another
        assert not _live_leases(state)  # both stages gave their lease back

        deadline = time.monotonic() + 120
        while prefect_server._alive(record.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not prefect_server._alive(record.pid), "the supervisor kept running with no stage"
        assert SharedServer.read(state) is None
        assert not prefect_server._healthy(record.api_url, timeout=1.0)  # the server went with it
    finally:
        prefect_server.stop(state)


def test_dead_processes_hold_no_lease(tmp_path: Path) -> None:
    leases = tmp_path / "leases"
    leases.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (leases / str(os.getpid())).touch()
    (leases / str(dead.pid)).touch()
    (leases / "not-a-pid").touch()
    assert _live_leases(tmp_path) == [os.getpid()]
    assert not (leases / str(dead.pid)).exists()


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("INPNET_PREFECT_SERVER", "dedicated", "INPNET_PREFECT_SERVER='dedicated'"),
        ("INPNET_PREFECT_IDLE_S", "soon", "INPNET_PREFECT_IDLE_S='soon'"),
        ("INPNET_PREFECT_IDLE_S", "0", "INPNET_PREFECT_IDLE_S='0'"),
    ],
)
def test_bad_settings_are_named(monkeypatch: pytest.MonkeyPatch, key: str, value: str, needle: str) -> None:
    from inpnet.errors import InpnetError

    monkeypatch.setenv(key, value)
    with pytest.raises(InpnetError, match=needle):  # noqa: PT012 - the bad setting is read by one of the two
        prefect_server.mode()
        prefect_server.idle_seconds()


def test_stop_without_a_server_says_so(tmp_path: Path) -> None:
    assert prefect_server.stop(tmp_path) is False
