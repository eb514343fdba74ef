"""A folder lock held by another process, for the tests that a second run is refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

_HOLD = """
import sys
from inpnet.outputs import FolderLock
lock = FolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()  # until the test closes stdin or kills us
"""


@contextmanager
def lock_held_elsewhere(folder: Path) -> Iterator[subprocess.Popen]:
    """Yield a child process that holds ``folder``'s lock; it is killed on exit (no release)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
