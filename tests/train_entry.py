"""Subprocess entry for the trainer tests (SIGTERM, torchrun): the `inpnet` CLI, plus the
test stand-ins for modules of other areas that do not exist yet."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    import pytest
    from train_support import install_standins

    install_standins(pytest.MonkeyPatch())
    from inpnet.cli import main

    sys.exit(main(sys.argv[1:]))
