"""A warm stage runner: the stages of one run start from a process that has imported torch,
Prefect and MLflow once, instead of each importing them again (3-6 s a stage on 2 cores).

The shared Prefect server's supervisor (:mod:`pipelines.prefect_server`) also starts this
runner. It imports the heavy third-party libraries (never ``inpnet`` or ``pipelines`` code,
so every stage runs the code on disk), runs no torch operation and starts no thread, then
listens on ``<PREFECT_HOME>/inpnet-server/warm.sock`` (a Unix socket only this user can reach).
``python -m pipelines.run STAGE ...`` (every DVC stage's command) connects to it and hands
over its argv, working directory, environment and its stdin/stdout/stderr file descriptors;
the runner forks:

- a *keeper* per request, which forks the *stage* process and relays to the client its exit
  status, and from the client the signals it gets (SIGINT, SIGTERM, SIGHUP). When the client
  dies (SIGKILL included), the keeper SIGKILLs the stage's process group, as if the stage
  itself had been killed;
- the *stage*, which takes the client's descriptors, directory, environment and arguments,
  forgets the runner's own modules of ``pipelines``/``inpnet``, and runs the stage module as
  ``__main__``, exactly as ``python -m pipelines.STAGE`` would.

The client falls back to running the stage itself, with the same result and only slower,
whenever the runner is absent, still loading, or refuses: another Python, or an environment
that differs in a variable the preloaded libraries read at import (``PREFECT_*``,
``MLFLOW_*``, ``OMP_*``, ...). ``INPNET_WARM_STAGES=0`` turns it off.

This module imports only the standard library at the top: the client must start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SOCKET_NAME = "warm.sock"
# what the runner imports once; each is what one of the stages imports at its top
PRELOAD = (
    "numpy",
    "PIL.Image",
    "yaml",
    "pydantic",
    "httpx",
    "torch",
    "torch.nn.functional",
    "torch.distributed",
    "torchvision",
    "timm",
    "safetensors.torch",
    "skimage.metrics",
    "webdataset",
    "tqdm",
    "prefect",
    "prefect.flows",
    "prefect.tasks",
    "prefect.logging",
    "prefect.client.orchestration",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.tracking",
    "matplotlib.pyplot",
)
# environment variables the preloaded libraries may read at import: a client whose values
# differ from the runner's runs its stage itself
_IMPORT_TIME_ENV = (
    "PREFECT_",
    "MLFLOW_",
    "OMP_",
    "MKL_",
    "KMP_",
    "TORCH",
    "CUDA",
    "PYTORCH",
    "NCCL",
    "PYTHON",
    "LD_",
    "MPLBACKEND",
    "HOME",
    "INPNET_",
)
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_MAX_MESSAGE = 1 << 20
_PR_SET_PDEATHSIG = 1


def enabled() -> bool:
    return os.environ.get("INPNET_WARM_STAGES", "1").strip().lower() not in ("0", "false", "no", "off")


def socket_path(env: Mapping[str, str] | None = None) -> Path:
    """``<PREFECT_HOME>/inpnet-server/warm.sock``, the shared server's state folder, from the
    environment alone (the client does not import Prefect; a home Prefect finds elsewhere, in a
    profile, only means the client does not find the runner and runs the stage itself)."""
    home = (os.environ if env is None else env).get("PREFECT_HOME") or str(Path("~/.prefect"))
    return Path(home).expanduser() / "inpnet-server" / SOCKET_NAME


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME_ENV)}


def _send(conn: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(conn, [data], fds)
    else:
        conn.sendall(data)


def _recv(conn: socket.socket) -> dict[str, Any] | None:
    data = conn.recv(_MAX_MESSAGE)
    if not data:
        return None
    message: dict[str, Any] = json.loads(data)
    return message


# --- the client ----------------------------------------------------------------------------


def run_warm(module: str, argv: list[str]) -> int | None:
    """Run ``python -m module *argv`` in the warm runner; its exit code, or None when it cannot
    (no runner, a refusal, or turned off): then the caller runs the stage itself."""
    if not enabled() or os.environ.get("PREFECT_API_URL") or os.environ.get("INPNET_PREFECT_SERVER") == "temporary":
        return None
    path = socket_path()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    with conn:
        request = {
            "module": module,
            "argv": argv,
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "executable": sys.executable,
            "client": os.getpid(),
        }
        try:
            _send(conn, request, [0, 1, 2])
            reply = _recv(conn)
        except OSError:
            return None
        if reply is None or "refused" in reply:
            if reply is not None:
                logger.debug("warm runner refused: %s", reply["refused"])
            return None
        previous = {s: signal.signal(s, lambda signum, _f: _forward(conn, signum)) for s in _FORWARDED}
        try:
            while True:
                try:
                    message = _recv(conn)
                except InterruptedError:
                    continue
                if message is None:
                    print(f"{module}: the warm runner's keeper exited without the stage's status", file=sys.stderr)
                    return 1
                if "exit" in message:
                    return int(message["exit"])
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _forward(conn: socket.socket, signum: int) -> None:
    with contextlib.suppress(OSError):
        _send(conn, {"signal": int(signum)})


# --- the runner ----------------------------------------------------------------------------


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import ``modules`` (those installed); the names imported."""
    import importlib

    done = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        done.append(name)
    return done


def serve(path: Path, modules: tuple[str, ...] = PRELOAD) -> int:
    """Preload, then fork a keeper per connection until SIGTERM (or the supervisor's death)."""
    import threading

    started = time.monotonic()
    before = dict(os.environ)
    loaded = preload(modules)
    # what the imports themselves set (torch sets TORCHINDUCTOR_CACHE_DIR, say): a cold stage
    # would have set it too, so the stage gets it on top of the client's environment
    added = {k: v for k, v in os.environ.items() if k not in before}
    if threading.active_count() > 1:  # a fork would copy a process whose other threads vanish
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        logger.error("warm runner: importing %s started threads %s; not serving (stages start cold)", loaded, names)
        return 1
    env = import_time_env(before)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(tmp))
    finally:
        os.umask(old_umask)
    listener.listen(16)
    tmp.replace(path)  # clients see the socket only once it accepts
    bound = path.stat().st_ino

    def on_term(_signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            if path.stat().st_ino == bound:  # not a later runner's socket
                path.unlink()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # keepers are reaped by the kernel
    logger.info(
        "warm runner %d at %s after %.1f s (%s)", os.getpid(), path, time.monotonic() - started, ", ".join(loaded)
    )
    while True:
        try:
            conn, _ = listener.accept()
        except InterruptedError:
            continue
        pid = os.fork()
        if pid == 0:
            listener.close()
            _keeper(conn, env, added)  # never returns in the keeper; the stage raises SystemExit up here
        conn.close()


def _keeper(conn: socket.socket, env: dict[str, str], added: dict[str, str]) -> None:
    """One request: check it, fork the stage, relay signals and the exit status; then exit."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the runner's SIG_IGN would reap the stage before waitpid
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client forwards what it gets
    try:
        data, fds, _flags, _addr = socket.recv_fds(conn, _MAX_MESSAGE, 3)
        request = json.loads(data)
        refusal = _refusal(request, fds, env)
    except (OSError, ValueError) as err:
        refusal, request, fds = f"unreadable request: {err}", {}, []
    if refusal:
        _log(f"client {request.get('client')}: refused, {refusal}")
        with contextlib.suppress(OSError):
            _send(conn, {"refused": refusal})
        os._exit(0)
    started = time.monotonic()
    stage = os.fork()
    if stage == 0:
        conn.close()
        _become_stage(request, fds, added)  # raises SystemExit with the stage's code
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):
        _send(conn, {"pid": stage})
    _log(f"client {request.get('client')}: {request['module']} {' '.join(request['argv'])} as pid {stage}")
    status = _relay(conn, stage)
    _log(f"client {request.get('client')}: pid {stage} exited {status} after {time.monotonic() - started:.1f} s")
    with contextlib.suppress(OSError):
        _send(conn, {"exit": status})
    os._exit(0)


def _log(line: str) -> None:
    """A line in the runner's log (its stdout), written at once: keepers end with os._exit."""
    with contextlib.suppress(OSError):
        os.write(1, f"{time.strftime('%H:%M:%S')} {line}\n".encode())


def _refusal(request: dict[str, Any], fds: list[int], env: dict[str, str]) -> str:
    if len(fds) != 3:
        return f"expected stdin, stdout and stderr, got {len(fds)} descriptors"
    if request.get("executable") != sys.executable:
        return f"another Python ({request.get('executable')}, the runner's is {sys.executable})"
    theirs = import_time_env(request.get("env", {}))
    if theirs != env:
        keys = sorted(k for k in set(theirs) | set(env) if theirs.get(k) != env.get(k))
        return f"the environment differs in {', '.join(keys)}"
    return ""


def _relay(conn: socket.socket, stage: int) -> int:
    """Forward the client's signals to the stage until it exits; its exit status (128 + N when
    killed by signal N, as a shell reports it). A client that goes away takes the stage along."""
    pidfd = os.pidfd_open(stage)
    try:
        while True:
            waiting: list[Any] = [conn, pidfd]
            ready, _, _ = select.select(waiting, [], [])
            if pidfd in ready:
                _, status = os.waitpid(stage, 0)
                return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
            try:
                message = _recv(conn)
            except OSError:
                message = None
            if message is None:  # the client died: so does its stage
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(stage, signal.SIGKILL)
                conn.close()
                os.waitpid(stage, 0)
                os._exit(0)
            if "signal" in message:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stage, int(message["signal"]))
    finally:
        with contextlib.suppress(OSError):
            os.close(pidfd)


def _become_stage(request: dict[str, Any], fds: list[int], added: dict[str, str]) -> None:
    """In the stage process: take on the client's identity and run its module as ``__main__``."""
    import io
    import runpy

    os.setpgid(0, 0)  # its own group: the keeper can kill it with its children
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False))  # noqa: SIM115 - the process's own stream
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=os.isatty(1), write_through=False)  # noqa: SIM115
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), line_buffering=True, errors="backslashreplace")  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**added, **request["env"]})
    for name in [m for m in sys.modules if m.split(".")[0] in ("pipelines", "inpnet", "__mp_main__")]:
        del sys.modules[name]
    sys.path[0] = request["cwd"]  # what `python -m` puts first
    logging.getLogger().handlers.clear()
    module = request["module"]
    sys.argv = [module, *request["argv"]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        raise SystemExit(128 + signal.SIGINT) from None
    except Exception:  # noqa: BLE001 - what an uncaught exception does: its traceback, exit status 1
        import traceback

        traceback.print_exc()
        raise SystemExit(1) from None
    raise SystemExit(0)


def start_runner(state: Path) -> Any:
    """Start the runner as a child of the calling process (the supervisor), logging to
    ``state/warm.log``; it dies with its parent."""
    import subprocess

    log = open(state / "warm.log", "ab")  # noqa: SIM115 - handed to the child
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    try:
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.warm", "serve", "--socket", str(state / SOCKET_NAME)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(Path(__file__).resolve().parents[1]),
            preexec_fn=preexec,  # noqa: PLW1509 - the supervisor's main thread, before it starts any other
        )
    finally:
        log.close()


def stop_runner(runner: Any, timeout: float = 10.0) -> None:
    """SIGTERM the runner (it removes its socket) and wait for it; running stages go on. (A
    socket left by a killed runner refuses connections: clients then start cold.)"""
    import subprocess

    runner.terminate()
    try:
        runner.wait(timeout)
    except subprocess.TimeoutExpired:
        runner.kill()
        runner.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.warm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the runner (the shared server's supervisor starts it)")
    serve_p.add_argument("--socket", type=Path, required=True)
    serve_p.add_argument("--preload", nargs="*", help="modules to import first (default: the stages' heavy ones)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return serve(args.socket, PRELOAD if args.preload is None else tuple(args.preload))


if __name__ == "__main__":
    sys.exit(main())
