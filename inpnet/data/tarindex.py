"""Reading a Places365 tar without extracting it: the member index and the label lists.

:func:`index_tar` reads tar headers only (it seeks over member data), recording
each member's data offset so that parallel workers can ``pread`` their own range later.
Labels come from the official file lists (``places365_train_standard.txt``: ``/a/airfield/
00000001.jpg 0``; ``places365_val.txt``: ``Places365_val_00000001.jpg 165``), never from
directory names. A list entry names the member's path below the tar's top folder
(``data_large/`` or ``val_large/``).
"""

from __future__ import annotations

import os
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


_KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"5": "dir", b"2": "symlink", b"1": "hardlink",
          b"3": "chardev", b"4": "blockdev", b"6": "fifo"}
_NO_DATA = frozenset({"dir", "symlink", "hardlink", "chardev", "blockdev", "fifo"})
_ZERO_BLOCK = bytes(512)


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for values that do not fit the octal digits
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _pax(data: bytes) -> dict[str, str]:
    """Records ``"<length> <key>=<value>\\n"`` of a pax extended header."""
    records, pos = {}, 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        length = int(data[pos : data.index(b" ", pos)])
        key, _, value = data[data.index(b" ", pos) + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def index_tar(path: str | Path, limit: int | None = None) -> list[Member]:
    """Every member (or the first ``limit``) of an uncompressed tar, from its headers alone.

    Parses ustar, GNU (long names, base-256 sizes) and pax headers directly: ``tarfile``
    costs ~170 us a header here, five minutes for Places365's 1.8M members.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tar not found (fetch it with `inpnet data fetch` or check --tar)")
    members: list[Member] = []
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise DataError(f"{path}: cannot read the tar: {err.strerror}") from None
    try:
        end, offset, extra = os.fstat(fd).st_size, 0, {}
        if end < 1024:
            raise DataError(f"{path}: {end} bytes is too small for a tar; pass the .tar as downloaded")
        while offset + 512 <= end and (limit is None or len(members) < limit):
            block = os.pread(fd, 512, offset)
            if block == _ZERO_BLOCK:
                break
            checksum = _number(block[148:156])
            if checksum != sum(block) - sum(block[148:156]) + 256 and checksum != _signed_sum(block):
                if offset == 0:
                    raise DataError(f"{path}: not an uncompressed tar (bad header checksum); pass the .tar as downloaded")
                raise DataError(f"{path}: corrupt tar header at byte {offset}; re-download the tar")
            flag, size = block[156:157], _number(block[124:136])
            data_offset = offset + 512
            offset = data_offset + -(-size // 512) * 512
            if flag in (b"L", b"K", b"x", b"X", b"g"):  # metadata for the next header
                payload = os.pread(fd, size, data_offset)
                if flag == b"L":
                    extra["path"] = _text(payload)
                elif flag in (b"x", b"X"):
                    extra.update(_pax(payload))
                continue
            name = _text(block[0:100])
            if block[257:263] == b"ustar\0" and block[345] != 0:  # POSIX name prefix
                name = f"{_text(block[345:500])}/{name}"
            name = extra.get("path", name)
            if "size" in extra:
                size = int(extra["size"])
                offset = data_offset + -(-size // 512) * 512
            mtime = int(float(extra.get("mtime", _number(block[136:148]))))
            kind = _KINDS.get(flag, "other")
            if kind == "dir":
                name = name.rstrip("/")
            if kind in _NO_DATA:
                offset = data_offset
            members.append(Member(len(members), name, data_offset, size, mtime if 0 <= mtime < 8**11 else 0, kind))
            extra = {}
    except (ValueError, IndexError) as err:
        raise DataError(f"{path}: corrupt tar header near byte {offset} ({err}); re-download the tar") from None
    finally:
        os.close(fd)
    return members


def _signed_sum(block: bytes) -> int:
    """The checksum some old tars store: header bytes summed as signed chars."""
    return sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 256


def member_problem(member: Member) -> str | None:
    """Why a member must be skipped before reading it (unsafe or not a file), else None."""
    name = member.name
    if name.startswith("/"):
        return "unsafe: absolute path"
    if ".." in name.split("/"):
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
    stem = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    key = _UNSAFE_KEY_CHARS.sub("_", stem.strip("/").replace("/", "_"))
    if len(key) > 80:
        import hashlib

        key = f"{key[:60]}_{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    return key
