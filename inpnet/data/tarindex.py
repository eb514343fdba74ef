"""Reading a Places365 tar without extracting it: the member index and the label lists.

:func:`index_tar` reads tar headers only (``tarfile`` seeks over member data), recording
each member's data offset so that parallel workers can ``pread`` their own range later.
Labels come from the official file lists (``places365_train_standard.txt``: ``/a/airfield/
00000001.jpg 0``; ``places365_val.txt``: ``Places365_val_00000001.jpg 165``), never from
directory names. A list entry names the member's path below the tar's top folder
(``data_large/`` or ``val_large/``).
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from inpnet.errors import DataError

__all__ = ["LIST_NAMES", "Member", "index_tar", "list_key", "member_problem", "read_labels", "sample_key"]

# The file inside filelist_places365-standard.tar that labels each split.
LIST_NAMES = {"train": "places365_train_standard.txt", "val": "places365_val.txt"}


@dataclass(frozen=True, slots=True)
class Member:
    """One tar member as its header describes it."""

    ordinal: int  # position in the tar, counting every header-described member
    name: str
    offset: int  # byte offset of the member's data in the tar
    size: int
    mtime: int
    kind: str  # file, dir, symlink, hardlink, chardev, blockdev, fifo, other


def _kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    for kind, test in (("dir", info.isdir), ("symlink", info.issym), ("hardlink", info.islnk),
                       ("chardev", info.ischr), ("blockdev", info.isblk), ("fifo", info.isfifo)):
        if test():
            return kind
    return "other"


def index_tar(path: str | Path) -> list[Member]:
    """Every member of an uncompressed tar, from its headers alone (no data is read)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tar not found (fetch it with `inpnet data fetch` or check --tar)")
    members: list[Member] = []
    try:
        with tarfile.open(path, "r:") as tar:
            while (info := tar.next()) is not None:
                # tarfile keeps every TarInfo it has seen; 1.8M of them would cost gigabytes.
                tar.members.clear()
                mtime = int(info.mtime) if 0 <= info.mtime < 8**11 else 0
                members.append(Member(len(members), info.name, info.offset_data, info.size, mtime, _kind(info)))
    except tarfile.ReadError as err:
        raise DataError(f"{path}: not a readable uncompressed tar ({err}); pass the .tar as downloaded") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the tar: {err}") from None
    return members


def member_problem(member: Member) -> str | None:
    """Why a member must be skipped before reading it (unsafe or not a file), else None."""
    name = member.name
    if name.startswith("/"):
        return "unsafe: absolute path"
    if ".." in PurePosixPath(name).parts:
        return "unsafe: path contains '..'"
    if member.kind in ("symlink", "hardlink"):
        return f"unsafe: {member.kind}"
    if member.kind in ("chardev", "blockdev", "fifo"):
        return f"unsafe: device or fifo ({member.kind})"
    if member.kind != "file":
        return f"not a regular file ({member.kind})"
    if member.size == 0:
        return "empty file"
    return None


def list_key(name: str) -> str:
    """The file-list path of member ``name``: its path below the tar's top folder."""
    name = name.removeprefix("./")
    _, _, below = name.partition("/")
    return below or name


def read_labels(filelist: str | Path, split: str) -> tuple[dict[str, int], bytes]:
    """Labels of ``split`` by list path, and the raw list bytes (for the manifest's hash).

    ``filelist`` is either ``filelist_places365-standard.tar`` (the split's list is read
    from inside it) or the split's ``.txt`` list itself.
    """
    filelist = Path(filelist)
    if split not in LIST_NAMES:
        raise DataError(f"split must be one of {sorted(LIST_NAMES)}, got {split!r}")
    if not filelist.is_file():
        raise DataError(f"{filelist}: file list not found (fetch it with `inpnet data fetch --what filelist`)")
    raw = _list_bytes(filelist, LIST_NAMES[split])
    labels: dict[str, int] = {}
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"{filelist}: line {number} is not '<path> <class index>': {line[:80]!r}")
        labels[parts[0].lstrip("/")] = int(parts[1])
    if not labels:
        raise DataError(f"{filelist}: the {split} file list is empty")
    return labels, raw


def _list_bytes(filelist: Path, wanted: str) -> bytes:
    if not tarfile.is_tarfile(filelist):
        return filelist.read_bytes()
    with tarfile.open(filelist) as tar:
        for info in tar:
            if info.isreg() and PurePosixPath(info.name).name == wanted:
                handle = tar.extractfile(info)
                assert handle is not None  # a regular file always has data
                return handle.read()
        names = [PurePosixPath(i.name).name for i in tar.getmembers() if i.isreg()]
    raise DataError(f"{filelist}: has no {wanted} (it holds {names[:5]}); pass filelist_places365-standard.tar")


_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def sample_key(path: str) -> str:
    """A WebDataset key for list path ``path``: no dots or slashes, at most 80 characters."""
    stem = path.rsplit(".", 1)[0] if "." in PurePosixPath(path).name else path
    key = _UNSAFE_KEY_CHARS.sub("_", stem.strip("/").replace("/", "_"))
    if len(key) > 80:
        import hashlib

        key = f"{key[:60]}_{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    return key
