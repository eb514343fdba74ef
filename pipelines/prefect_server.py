"""One local Prefect server shared by every stage of a run, stopped when the run is over.

Prefect needs an API. Without ``PREFECT_API_URL`` it starts a temporary server inside each
process (12-17 s on a 2-core machine), so a 13-stage ``dvc repro`` would pay that 13
times. Instead, the first stage of a run starts *one* server (Prefect's own
``SubprocessASGIServer``, the server ``prefect server start`` runs, API only) under a small
supervisor process, and every later stage connects to it:

- ``<PREFECT_HOME>/inpnet-server/server.json`` names the supervisor's PID and the API URL;
- each stage holds a lease, ``leases/<pid>``, for as long as it runs;
- the supervisor also runs the warm stage runner (:mod:`pipelines.warm`), from which the
  stages after the first start with torch, Prefect and MLflow already imported;
- the supervisor stops the server and exits once no live process has held a lease for
  ``INPNET_PREFECT_IDLE_S`` seconds (default 60: DVC starts the next stage within a few
  seconds, so a whole ``dvc repro`` shares one server, and nothing is left running after it).

Start and shutdown take ``start.lock`` (``flock``), so a stage never connects to a server
that is deciding to stop. The server process gets ``PR_SET_PDEATHSIG``: a SIGKILLed
supervisor takes it along. ``PREFECT_API_URL`` set by the user always wins, and
``INPNET_PREFECT_SERVER=temporary`` restores Prefect's per-process temporary server.

    python -m pipelines.prefect_server status    # the shared server, if one runs
    python -m pipelines.prefect_server stop      # stop it now
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipelines import warm

logger = logging.getLogger(__name__)

__all__ = ["SharedServer", "lease_shared_server", "mode", "state_dir"]

_MODES = ("shared", "temporary")


def mode() -> str:
    """``shared`` (the default) or ``temporary``, from ``INPNET_PREFECT_SERVER``."""
    value = os.environ.get("INPNET_PREFECT_SERVER", "shared").strip().lower() or "shared"
    if value not in _MODES:
        from inpnet.errors import InpnetError

        raise InpnetError(f"INPNET_PREFECT_SERVER={value!r}: expected one of {', '.join(_MODES)}")
    return value


def idle_seconds() -> float:
    raw = os.environ.get("INPNET_PREFECT_IDLE_S", "60")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        from inpnet.errors import InpnetError

        raise InpnetError(f"INPNET_PREFECT_IDLE_S={raw!r}: expected a positive number of seconds")
    return value


def state_dir() -> Path:
    """``<PREFECT_HOME>/inpnet-server``: one shared server per Prefect home (and database)."""
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser() / "inpnet-server"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class SharedServer:
    """The supervisor's record: its PID and the API URL its server answers on."""

    pid: int
    api_url: str

    @classmethod
    def read(cls, state: Path) -> SharedServer | None:
        try:
            data = json.loads((state / "server.json").read_text())
            return cls(int(data["pid"]), str(data["api_url"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, state: Path) -> None:
        tmp = state / f"server.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"pid": self.pid, "api_url": self.api_url}))
        tmp.replace(state / "server.json")

    def usable(self) -> bool:
        return _alive(self.pid) and _healthy(self.api_url)


@contextmanager
def _start_lock(state: Path) -> Iterator[None]:
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "start.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _live_leases(state: Path) -> list[int]:
    """PIDs holding a lease; leases of dead processes are removed."""
    live = []
    for path in (state / "leases").glob("*"):
        try:
            pid = int(path.name)
        except ValueError:
            continue
        if _alive(pid):
            live.append(pid)
        else:
            path.unlink(missing_ok=True)
    return live


def _spawn_supervisor(state: Path, timeout: float) -> SharedServer:
    """Start a supervisor (in its own session, so it outlives this stage) and wait for its server."""
    log_path = state / "server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.prefect_server", "serve", "--state", str(state)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(Path(__file__).resolve().parents[1]),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = SharedServer.read(state)
        if record is not None and record.pid == proc.pid and _healthy(record.api_url):
            return record
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    if proc.poll() is None:
        proc.terminate()
    from inpnet.errors import InpnetError

    raise InpnetError(
        f"the shared Prefect server did not start within {timeout:.0f} s (exit code {proc.poll()}); "
        f"see {log_path}, or set INPNET_PREFECT_SERVER=temporary or PREFECT_API_URL"
    )


@contextmanager
def lease_shared_server(timeout: float = 180.0) -> Iterator[str]:
    """Hold a lease on the shared server (starting it if none runs) and yield its API URL."""
    state = state_dir()
    leases = state / "leases"
    leases.mkdir(parents=True, exist_ok=True)
    lease = leases / str(os.getpid())
    with _start_lock(state):
        lease.touch()  # under the lock: a supervisor shutting down re-checks leases under it too
        try:
            record = SharedServer.read(state)
            if record is None or not record.usable():
                logger.info("starting the shared Prefect server (%s)", state)
                started = time.monotonic()
                record = _spawn_supervisor(state, timeout)
                logger.info("shared Prefect server at %s after %.1f s", record.api_url, time.monotonic() - started)
            else:
                logger.info("using the shared Prefect server at %s", record.api_url)
        except BaseException:
            lease.unlink(missing_ok=True)
            raise
    try:
        yield record.api_url
    finally:
        lease.unlink(missing_ok=True)


def serve(state: Path, idle_s: float, poll_s: float = 1.0) -> int:
    """The supervisor: run the server until no lease has been live for ``idle_s`` seconds."""
    from prefect.server.api.server import SubprocessASGIServer

    from pipelines.common import tie_server_module

    tie_server_module()  # the uvicorn child gets PR_SET_PDEATHSIG: it dies with this process
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # the warm runner preloads while the server starts: from the next stage on, stages fork from it
    runner = warm.start_runner(state) if warm.enabled() else None
    server = SubprocessASGIServer()
    server.start()
    record = SharedServer(os.getpid(), server.api_url)
    record.write(state)
    logger.info(
        "shared Prefect server %s (supervisor %d, stops %.0f s after the last stage)",
        server.api_url,
        os.getpid(),
        idle_s,
    )
    last_busy = time.monotonic()
    try:
        while not stopping:
            time.sleep(poll_s)
            if server.server_process is None or server.server_process.poll() is not None:
                logger.error("the Prefect server process exited; the supervisor stops")
                break
            if _live_leases(state):
                last_busy = time.monotonic()
                continue
            if time.monotonic() - last_busy < idle_s:
                continue
            with _start_lock(state):
                if _live_leases(state):  # a stage arrived while we looked
                    last_busy = time.monotonic()
                    continue
                if SharedServer.read(state) == record:
                    (state / "server.json").unlink(missing_ok=True)
                break
    finally:
        if SharedServer.read(state) == record:
            (state / "server.json").unlink(missing_ok=True)
        if runner is not None:
            warm.stop_runner(runner)
        server.stop()
        logger.info("shared Prefect server stopped")
    return 0


def stop(state: Path, timeout: float = 30.0) -> bool:
    """Stop the shared server of ``state`` now; False when none was running."""
    record = SharedServer.read(state)
    if record is None or not _alive(record.pid):
        return False
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(record.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def main(argv: list[str] | None = None) -> int:
    from pipelines.common import prepare_environment

    prepare_environment()
    parser = argparse.ArgumentParser(prog="python -m pipelines.prefect_server", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the supervisor (started by the first stage; not by hand)")
    serve_p.add_argument("--state", type=Path, required=True)
    sub.add_parser("status", help="print the shared server's URL and supervisor PID, if one runs")
    sub.add_parser("stop", help="stop the shared server now")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "serve":
        return serve(args.state, idle_seconds())
    state = state_dir()
    if args.command == "stop":
        print("stopped" if stop(state) else "no shared Prefect server is running")
        return 0
    record = SharedServer.read(state)
    if record is None or not record.usable():
        print(f"no shared Prefect server is running ({state})")
        return 1
    print(f"{record.api_url} (supervisor PID {record.pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
