"""Reading a Places365 tar without extracting it: the member index and the label lists.

:func:`index_tar` reads tar headers only (it seeks over member data), recording
each member's data offset so that parallel workers can ``pread`` their own range later.
Labels come from the official file lists (``places365_train_standard.txt``: ``/a/airfield/
00000001.jpg 0``; ``places365_val.txt``: ``Places365_val_00000001.jpg 165``), never from
directory names. A list entry names the member's path below the tar's top folder
(``data_large/`` or ``val_large/``).
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from inpnet.errors import DataError

__all__ = [
    "LIST_NAMES",
    "Member",
    "display_name",
    "index_tar",
    "list_key",
    "member_problem",
    "read_labels",
    "sample_key",
]

logger = logging.getLogger(__name__)

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


_KINDS = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",
    b"5": "dir",
    b"2": "symlink",
    b"1": "hardlink",
    b"3": "chardev",
    b"4": "blockdev",
    b"6": "fifo",
}
_NO_DATA = frozenset({"dir", "symlink", "hardlink", "chardev", "blockdev", "fifo"})
_ZERO_BLOCK = bytes(512)
# Headers that describe the next one, by typeflag. Their payload is read into memory, so it
# is capped: a real long name or pax header is a few hundred bytes.
_META = {b"L": "long-name", b"K": "long-link", b"x": "pax", b"X": "pax", b"g": "global pax"}
_MAX_META = 1 << 20
_OCTAL = re.compile(rb" *([0-7]*) *")
_PAX_INT = re.compile(r"[0-9]{1,20}")
_PAX_TIME = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{0,20})?")


class _BadHeader(ValueError):
    """A header field that cannot be right; :func:`index_tar` adds the file and offset."""


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes, what: str) -> int:
    """An octal field (digits, optional spaces, NUL-terminated) or a GNU base-256 one."""
    if field[0] == 0x80:  # GNU base-256 for values that do not fit the octal digits
        return int.from_bytes(field[1:], "big")
    if field[0] == 0xFF:  # GNU base-256, negative (two's complement)
        return int.from_bytes(field, "big", signed=True)
    digits = _OCTAL.fullmatch(field.split(b"\0", 1)[0])
    if digits is None:
        raise _BadHeader(f"{what} field {field!r} is not an octal number")
    return int(digits.group(1), 8) if digits.group(1) else 0


def _pax(data: bytes) -> dict[str, str]:
    """Records ``"<length> <key>=<value>\\n"`` of a pax extended header."""
    records, pos = {}, 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 21)
        length = int(data[pos:space]) if space > pos and data[pos:space].isdigit() else 0
        end = pos + length
        if length <= space - pos + 1 or end > len(data) or data[end - 1] != 0x0A:
            raise _BadHeader(f"pax record at payload byte {pos} is malformed ({data[pos : pos + 40]!r})")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise _BadHeader(f"pax record at payload byte {pos} has no '=' ({data[pos : pos + 40]!r})")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


def _pax_number(extra: dict[str, str], key: str, pattern: re.Pattern[str]) -> int | None:
    if key not in extra:
        return None
    if not pattern.fullmatch(extra[key]):
        raise _BadHeader(f"pax {key} {extra[key][:40]!r} is not a valid number")
    return int(extra[key].partition(".")[0])


def index_tar(path: str | Path, limit: int | None = None) -> list[Member]:
    """Every member (or the first ``limit``) of an uncompressed tar, from its headers alone.

    Parses ustar, GNU (long names, base-256 sizes) and pax headers directly: ``tarfile``
    costs ~170 us a header here, five minutes for Places365's 1.8M members.

    Hostile or damaged input ends in a :class:`DataError` naming the header's byte offset
    and the field: a size that is negative, not a number, or runs past the end of the file,
    a metadata header over 1 MiB, a file that ends inside a header or a member's data. A
    tar whose last member is complete but that lacks the end-of-archive blocks is read,
    with a warning (it may have been cut at a member boundary).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tar not found (fetch it with `inpnet data fetch` or check --tar)")
    members: list[Member] = []
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise DataError(f"{path}: cannot read the tar: {err.strerror}") from None
    end, offset = os.fstat(fd).st_size, 0
    header = 0
    try:
        if end < 1024:
            raise DataError(f"{path}: {end} bytes is too small for a tar; pass the .tar as downloaded")
        extra: dict[str, str] = {}
        while limit is None or len(members) < limit:
            header = offset
            if offset == end:
                logger.warning(
                    "%s: no end-of-archive blocks after %d members (byte %d); the tar may be cut short",
                    path,
                    len(members),
                    end,
                )
                break
            if offset + 512 > end:
                where = (
                    f"{end - offset} bytes into the header at byte {offset}"
                    if offset < end
                    else f"inside the padding after the last member's data (the next header would be at byte {offset})"
                )
                raise DataError(f"{path}: truncated tar: it ends at byte {end}, {where}; re-download the tar")
            block = os.pread(fd, 512, offset)
            if block == _ZERO_BLOCK:
                break
            if not _checksum_ok(block):
                if offset == 0:
                    raise DataError(
                        f"{path}: not an uncompressed tar (bad header checksum); pass the .tar as downloaded"
                    )
                raise DataError(f"{path}: corrupt tar header at byte {offset} (bad checksum); re-download the tar")
            flag = block[156:157]
            kind = "meta" if flag in _META else _KINDS.get(flag, "other")
            name = _text(block[0:100])
            if block[257:263] == b"ustar\0" and block[345] != 0:  # POSIX name prefix
                name = f"{_text(block[345:500])}/{name}"
            size = _number(block[124:136], "size")
            if size < 0:
                raise _BadHeader(f"size field {block[124:136]!r} is negative ({size})")
            if kind != "meta":  # pax and GNU long-name records describe this header
                name = extra.get("path", name)
                if (pax_size := _pax_number(extra, "size", _PAX_INT)) is not None:
                    size = pax_size
            data_offset = header + 512
            if kind not in _NO_DATA and size > end - data_offset:
                raise _BadHeader(
                    f"member {name!r}: size field says {size} bytes, which runs past the end of the file "
                    f"({end - data_offset} bytes follow the header): the tar is truncated or the header corrupt"
                )
            offset = data_offset if kind in _NO_DATA else data_offset + -(-size // 512) * 512
            if kind == "meta":
                if size > _MAX_META:
                    raise _BadHeader(f"{_META[flag]} header of {size} bytes (at most {_MAX_META} are accepted)")
                payload = os.pread(fd, size, data_offset)
                if flag == b"L":
                    extra["path"] = _text(payload)
                elif flag in (b"x", b"X"):
                    extra.update(_pax(payload))
                continue
            mtime = _pax_number(extra, "mtime", _PAX_TIME)
            if mtime is None:
                mtime = _number(block[136:148], "mtime")
            if kind == "dir":
                name = name.rstrip("/")
            members.append(Member(len(members), name, data_offset, size, mtime if 0 <= mtime < 8**11 else 0, kind))
            extra = {}
    except _BadHeader as err:
        raise DataError(f"{path}: corrupt tar header at byte {header}: {err}; re-download the tar") from None
    finally:
        os.close(fd)
    return members


def _checksum_ok(block: bytes) -> bool:
    try:
        checksum = _number(block[148:156], "checksum")
    except _BadHeader:
        return False
    # unsigned (POSIX), or signed chars as some old tars store it
    return checksum == sum(block) - sum(block[148:156]) + 256 or checksum == _signed_sum(block)


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
    if name != (shown := display_name(name)):
        return f"name is not valid UTF-8: '{shown}'"
    if member.size == 0:
        return "empty file"
    return None


def display_name(name: str) -> str:
    """``name`` with the bytes that are not UTF-8 (kept as surrogates) written as ``\\xNN``:
    safe to encode, log and store in JSON."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
        if len(parts) != 2 or not _LABEL.fullmatch(parts[1]):
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


_LABEL = re.compile(r"[0-9]{1,9}")  # ASCII digits: str.isdigit() also takes '²', which int() refuses
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def sample_key(path: str) -> str:
    """A WebDataset key for list path ``path``: no dots or slashes, at most 80 characters."""
    stem = path.rsplit(".", 1)[0] if "." in path.rsplit("/", 1)[-1] else path
    key = _UNSAFE_KEY_CHARS.sub("_", stem.strip("/").replace("/", "_"))
    if len(key) > 80:
        import hashlib

        key = f"{key[:60]}_{hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:12]}"
    return key
