"""What every pipeline entry point shares: environment defaults, params, argument parsing.

Each DVC stage runs ``python -m pipelines.run <flow>`` (:mod:`pipelines.run`: ``python -m pipelines.<flow>``,
started warm when it can), which parses ``params.yaml`` once and
runs one Prefect flow. Prefect needs an API: with ``PREFECT_API_URL`` set, the flows talk to
that server; without it, the stages of a run share one local server that the first stage
starts and that stops a minute after the last (:mod:`pipelines.prefect_server`). With
``INPNET_PREFECT_SERVER=temporary``, Prefect starts a temporary server per process instead
(12-17 s each on a 2-core machine), which :func:`tie_prefect_server` makes die with the
process, however it ends.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Process-wide defaults that run_entry applies before the flow runs (Prefect and MLflow read
# them when they start a server or send telemetry, not at import); importing this module
# changes nothing, and library code never sets them.
_PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
}


def prepare_environment() -> None:
    """Set defaults that keep Prefect and DVC local and quiet, without overriding the user's."""
    for key, value in _PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def tie_prefect_server() -> None:
    """Make the temporary Prefect API server this process may start stop when the process dies.

    Prefect starts it with a plain ``Popen`` and stops it in an ``atexit`` hook, which a
    SIGKILL (or the OOM killer) never runs: the server is orphaned and keeps listening. Here
    the ``Popen`` of ``prefect.server.api.server`` gets a ``preexec_fn`` that asks Linux to send
    the child SIGTERM when its parent dies (``PR_SET_PDEATHSIG``). The kernel ties that signal
    to the *thread* that forked the child, so it is only set when the server is started from
    the main thread (Prefect's first API call in a flow run is made there). No-op with
    ``PREFECT_API_URL`` set (no temporary server) or off Linux; safe to call more than once.
    """
    if not sys.platform.startswith("linux"):
        return
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    tie_server_module()


def tie_server_module() -> None:
    """Give every server ``prefect.server.api.server`` starts from the main thread ``PR_SET_PDEATHSIG``."""
    from prefect.server.api import server

    module_globals = vars(server)  # the `subprocess` module that prefect's server module imported
    if not isinstance(module_globals["subprocess"], _PopenDyingWithParent):
        module_globals["subprocess"] = _PopenDyingWithParent(module_globals["subprocess"])


class _PopenDyingWithParent:
    """Stands in for the ``subprocess`` module in one module: ``Popen`` from the main thread
    starts children that get SIGTERM when this process dies; everything else is the module's."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def Popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen[Any]:  # noqa: N802 - the name it replaces
        if threading.current_thread() is threading.main_thread() and kwargs.get("preexec_fn") is None:
            kwargs["preexec_fn"] = _die_with_parent(os.getpid())
        else:
            logger.debug("Prefect server started outside the main thread: it will not stop if this process is killed")
        proc: subprocess.Popen[Any] = self._module.Popen(*args, **kwargs)
        return proc


def _die_with_parent(parent: int) -> Callable[[], None]:
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child

    def preexec() -> None:  # in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@contextmanager
def _prefect_api() -> Iterator[None]:
    """The user's ``PREFECT_API_URL``, else the shared server, else (on request) a temporary one."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines import prefect_server

    if PREFECT_API_URL.value() or prefect_server.mode() == "temporary":
        tie_prefect_server()
        yield
        return
    with prefect_server.lease_shared_server() as api_url, temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params.yaml to read (default: %(default)s)"
    )
    return parser


def run_entry(
    main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> int:
    """Set the environment defaults, parse arguments, run ``main``, and map expected failures to
    a one-line error and exit 2."""
    from inpnet.cli.app import setup_logging
    from inpnet.errors import InpnetError  # ConfigError included

    prepare_environment()
    setup_logging()
    args = parser.parse_args(argv)
    try:
        with _prefect_api():
            main(args)
    except InpnetError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0
