"""The ``inpnet`` command. ``main`` is the console-script entry point.

Library code raises :class:`inpnet.errors.InpnetError` or
:class:`inpnet.config.ConfigError`; this is the only place that turns them into a one-line
message on stderr and a non-zero exit code.
"""

from __future__ import annotations

import importlib
import sys

from inpnet.cli.app import app, setup_logging

# Each module registers its commands on the apps in inpnet.cli.app when imported.
_COMMAND_MODULES = (
    "inpnet.cli.data",
    "inpnet.cli.shard",
    "inpnet.cli.masks",
    "inpnet.cli.weights",
    "inpnet.cli.evaluate",
    "inpnet.cli.train",
    "inpnet.cli.registry",
    "inpnet.cli.export",
)

EXIT_USER_ERROR = 2


def _register_commands() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    from inpnet.errors import InpnetError  # ConfigError included

    setup_logging()
    _register_commands()
    try:
        # standalone mode: click reports usage errors itself and raises SystemExit(2)
        app(args=argv, prog_name="inpnet")
    except SystemExit as err:
        code = err.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except InpnetError as err:
        print(f"inpnet: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("inpnet: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
