"""Subprocess entry for the trainer tests (SIGTERM, torchrun): the `inpnet` CLI."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from inpnet.cli import main

    sys.exit(main(sys.argv[1:]))
