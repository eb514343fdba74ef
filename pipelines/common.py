"""What every pipeline entry point shares: environment defaults, params, argument parsing.

Each DVC stage runs ``python -m pipelines.<flow>``, which parses ``params.yaml`` once and
runs one Prefect flow. Prefect needs an API: with ``PREFECT_API_URL`` set, the flows talk to
that server (fast: no start-up per stage); without it, Prefect starts a temporary local
server for the process (12-17 s on a 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

# Applied before prefect is imported by the flow modules: these are process-wide defaults
# for the entry point, never set by library code.
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


prepare_environment()


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params.yaml to read (default: %(default)s)")
    return parser


def run_entry(main: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse arguments, run ``main``, and map expected failures to a one-line error and exit 2."""
    from inpnet.config import ConfigError
    from inpnet.errors import InpnetError

    from inpnet.cli.app import setup_logging

    setup_logging()
    args = parser.parse_args(argv)
    try:
        main(args)
    except (InpnetError, ConfigError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0
