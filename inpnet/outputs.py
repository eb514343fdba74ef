"""Writing a command's outputs: one run per output folder, whole files or none, clear errors.

Two runs writing into one folder corrupt each other quietly (a manifest whose hashes
describe the other run's shard), so every command that writes an output folder holds
:class:`FolderLock` on it for as long as it writes. The lock is ``fcntl.flock`` on a small
file beside the folder, ``<parent>/.<name>.lock``; beside rather than inside, because some
folders are replaced by a rename (checkpoints) and others are hashed whole by DVC. The
kernel drops a ``flock`` when its process dies, so a lock left by a killed run is simply
taken over; the PID and start time written into the file are only there for the message
a second run gets.

:func:`write_atomic` writes a file under a temporary name and renames it into place; on any
failure the temporary file is removed and an :class:`~inpnet.errors.OutputError` names the
path. :func:`output_error` turns an ``OSError`` from writing an output into that error.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from inpnet.errors import OutputError, OutputLockedError

__all__ = ["FolderLock", "locks_output", "output_error", "write_atomic", "writing_output"]

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def output_error(path: str | Path, err: OSError, what: str = "cannot write") -> OutputError:
    """An :class:`OutputError` that names ``path`` and says why in words (not a traceback)."""
    if isinstance(err, IsADirectoryError):
        reason = "a folder stands where the file would be written"
    elif isinstance(err, NotADirectoryError) or err.errno == errno.ENOTDIR:
        reason = "a part of the path is a file, not a folder"
    elif isinstance(err, FileExistsError):
        reason = "a file of that name exists where a folder is needed"
    else:
        reason = err.strerror or str(err)
    where = f" ({err.filename})" if err.filename and Path(err.filename) != Path(path) else ""
    return OutputError(f"{path}: {what}: {reason}{where}; pass an output path in a writable folder")


@contextmanager
def writing_output(path: str | Path, what: str = "cannot write") -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into :func:`output_error` for ``path``."""
    try:
        yield
    except OSError as err:
        raise output_error(path, err, what) from None


def write_atomic(path: str | Path, data: bytes, *, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` via ``.<name>.tmp`` and a rename: readers see all or nothing.

    The parent folder must exist.

    Args:
        durable: fsync the file and its folder, so the rename survives a power cut.

    Raises:
        OutputError: the file cannot be written; no temporary file is left behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with _ignoring_os_errors():
            tmp.unlink(missing_ok=True)
        raise output_error(path, OSError(err.errno, err.strerror)) from None  # name the file, not its temp
    if durable:
        fsync_dir(path.parent)
    return path


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    with _ignoring_os_errors():
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def _ignoring_os_errors() -> Iterator[None]:
    try:  # noqa: SIM105 - contextlib.suppress needs an import change, left to the import pass
        yield
    except OSError:
        pass


# ----------------------------------------------------------------------------- locks


class FolderLock:
    """Exclusive lock of an output folder for one run (the folder itself is not created).

    Use as a context manager, or :meth:`acquire` and :meth:`release` where the lock is taken
    on one rank only. A second holder, in this or another process, gets
    :class:`~inpnet.errors.OutputLockedError` naming the PID and the time of the first.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        real = self.folder.resolve()  # two spellings of one folder share one lock
        self.lock_file = real.parent / f".{real.name or 'root'}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the folder's lock, or raise if another run holds it or the place is unwritable."""
        if self._fd is not None:
            raise RuntimeError(f"{self.folder}: lock already held by this FolderLock")
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder}: the output folder is a file; pass a folder path or remove the file")
        with writing_output(self.folder, "cannot lock the output folder"):
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        while self._fd is None:
            with writing_output(self.folder, "cannot lock the output folder"):
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_holder(fd)
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise output_error(self.folder, err, "cannot lock the output folder") from None
                raise OutputLockedError(self._locked_message(holder)) from None
            if _same_file(fd, self.lock_file):
                self._fd = fd
            else:  # its holder removed the file as we opened it: lock the new one instead
                os.close(fd)
        self._take_over(_read_holder(self._fd))
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        with _ignoring_os_errors():
            self.lock_file.unlink()  # before closing: a waiter must not lock a file about to vanish
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _take_over(self, previous: dict[str, Any]) -> None:
        assert self._fd is not None
        if previous.get("pid"):
            log.info(
                "%s: taking over the lock left by PID %s (started %s), which has ended",
                self.folder,
                previous["pid"],
                previous.get("since", "at an unknown time"),
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "folder": str(self.folder),
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(record) + "\n").encode(), 0)

    def _locked_message(self, holder: dict[str, Any]) -> str:
        pid, since = holder.get("pid"), holder.get("since")
        who = f"PID {pid}" if pid else "another process"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        when = f" since {since}" if since else ""
        return (
            f"{self.folder} is locked by {who}{when} (lock file {self.lock_file}): another run is writing "
            "into this folder; wait for it to finish or stop it, or pass another output folder"
        )


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def locks_output(argument: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorator: hold :class:`FolderLock` on the folder passed as ``argument`` during the call."""

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            folder = signature.bind(*args, **kwargs).arguments[argument]
            with FolderLock(folder):
                return fn(*args, **kwargs)

        return locked

    return decorate
