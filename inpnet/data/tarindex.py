"""Reading a Places365 tar without extracting it: the member index and the label lists.

:func:`index_tar` reads tar headers only (it seeks over member data), recording
each member's data offset so that parallel workers can ``pread`` their own range later.
Labels come from the official file lists (``places365_train_standard.txt``: ``/a/airfield/
00000001.jpg 0``; ``places365_val.txt``: ``Places365_val_00000001.jpg 165``), never from
directory names. A list entry names the member's path below the tar's top folder
(``data_large/`` or ``val_large/``).

Both are compact, because Places365's train tar has 1.8M members: the index is a
:class:`TarIndex` (NumPy columns and one blob of names, 21 to 33 bytes a member plus its name),
not a list of objects, and :func:`read_labels` streams the file list and joins it to the
index, keeping one class index a member rather than a dict of every list path. A Python
object per member (a ``Member``, a list path and its dict entry) cost ~600 bytes a member,
1.1 GB for train_large.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
import re
import tarfile
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, overload

import numpy as np

from inpnet.errors import DataError

__all__ = [
    "LIST_NAMES",
    "Labels",
    "Member",
    "TarIndex",
    "column_items",
    "display_name",
    "index_tar",
    "list_key",
    "list_path",
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


_BLOCK = 1 << 10  # members turned into Python objects at a time when the index is walked
KINDS = ("file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo", "other")  # TarIndex.kinds codes
_KIND_CODE = {kind: code for code, kind in enumerate(KINDS)}


class TarIndex(Sequence[Member]):
    """Every member of a tar as :func:`index_tar` read it, in columns: ``offsets``, ``sizes`` and
    ``mtimes`` (int64, or uint32 where every value fits), ``kinds`` (uint8 codes into :data:`KINDS`), and the names as one blob of
    their UTF-8 bytes (undecodable bytes kept, as ``surrogateescape`` does) that ends at
    ``name_ends``. Position ``i`` is the member's ordinal. Indexing or iterating gives
    :class:`Member` objects, made on demand."""

    def __init__(
        self,
        names: bytes | bytearray,
        name_ends: np.ndarray,
        offsets: np.ndarray,
        sizes: np.ndarray,
        mtimes: np.ndarray,
        kinds: np.ndarray,
    ) -> None:
        count = len(name_ends)
        if not len(offsets) == len(sizes) == len(mtimes) == len(kinds) == count:
            raise ValueError(
                f"TarIndex columns differ in length: {count} names, {len(offsets)} offsets, "
                f"{len(sizes)} sizes, {len(mtimes)} mtimes, {len(kinds)} kinds"
            )
        self.names, self.name_ends = names, name_ends
        self.offsets, self.sizes, self.mtimes, self.kinds = offsets, sizes, mtimes, kinds

    @classmethod
    def empty(cls) -> TarIndex:
        none = np.zeros(0, np.int64)
        return cls(b"", none, none, none, none, np.zeros(0, np.uint8))

    def __len__(self) -> int:
        return len(self.name_ends)

    def name_bytes(self, i: int) -> bytes:
        return bytes(self.names[self.name_ends[i - 1] if i else 0 : self.name_ends[i]])

    def name(self, i: int) -> str:
        return self.name_bytes(i).decode("utf-8", "surrogateescape")

    def kind(self, i: int) -> str:
        return KINDS[self.kinds[i]]

    @overload
    def __getitem__(self, i: int) -> Member: ...
    @overload
    def __getitem__(self, i: slice) -> list[Member]: ...
    def __getitem__(self, i: int | slice) -> Member | list[Member]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"member {i} of a tar index of {len(self)}")
        i %= len(self)
        return Member(
            i, self.name(i), int(self.offsets[i]), int(self.sizes[i]), int(self.mtimes[i]), KINDS[self.kinds[i]]
        )

    def __iter__(self) -> Iterator[Member]:
        for start, names in self.name_blocks():
            stop = start + len(names)
            columns = (c[start:stop].tolist() for c in (self.offsets, self.sizes, self.mtimes, self.kinds))
            for i, (name, offset, size, mtime, kind) in enumerate(zip(names, *columns, strict=True), start):
                yield Member(i, name, offset, size, mtime, KINDS[kind])

    def name_blocks(self, block: int = _BLOCK) -> Iterator[tuple[int, list[str]]]:
        """``(first ordinal, names)`` of every ``block`` members in turn: a walk over the names
        that costs one slice each, not the two NumPy look-ups of :meth:`name`."""
        for start in range(0, len(self), block):
            ends = self.name_ends[start : start + block].tolist()
            begin = int(self.name_ends[start - 1]) if start else 0
            names = []
            for end in ends:
                names.append(self.names[begin:end].decode("utf-8", "surrogateescape"))
                begin = end
            yield start, names

    def take(self, ordinals: np.ndarray) -> TarIndex:
        """A new index of the members at ``ordinals`` (copies: a shard's own part, small to pickle)."""
        names = [self.name_bytes(int(i)) for i in ordinals]
        ends = np.cumsum([len(n) for n in names], dtype=np.int64)
        columns = (self.offsets, self.sizes, self.mtimes, self.kinds)
        return TarIndex(b"".join(names), ends, *(c[ordinals] for c in columns))

    def nbytes(self) -> int:
        """Bytes the columns and the names hold."""
        columns = (self.name_ends, self.offsets, self.sizes, self.mtimes, self.kinds)
        return len(self.names) + sum(c.nbytes for c in columns)


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


def index_tar(path: str | Path, limit: int | None = None) -> TarIndex:
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
    # Grown in place (array and bytearray append in amortised O(1)); NumPy views them at the end.
    names, name_ends = bytearray(), array("q")
    offsets, sizes, mtimes, kinds = array("q"), array("q"), array("q"), array("B")
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
        while limit is None or len(name_ends) < limit:
            header = offset
            if offset == end:
                logger.warning(
                    "%s: no end-of-archive blocks after %d members (byte %d); the tar may be cut short",
                    path,
                    len(name_ends),
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
            names += name.encode("utf-8", "surrogateescape")
            name_ends.append(len(names))
            offsets.append(data_offset)
            sizes.append(size)
            mtimes.append(mtime if 0 <= mtime < 8**11 else 0)
            kinds.append(_KIND_CODE[kind])
            extra = {}
    except _BadHeader as err:
        raise DataError(f"{path}: corrupt tar header at byte {header}: {err}; re-download the tar") from None
    finally:
        os.close(fd)
    ends, lengths, times = (_column(c, narrow=True) for c in (name_ends, sizes, mtimes))
    kind_codes = np.frombuffer(kinds, np.uint8).copy() if kinds else np.zeros(0, np.uint8)
    return TarIndex(bytes(names), ends, _column(offsets, narrow=False), lengths, times, kind_codes)


def column_items(column: np.ndarray) -> Iterator[int | bool]:
    """The items of ``column`` as Python values, converted a block at a time."""
    for start in range(0, len(column), _BLOCK):
        yield from column[start : start + _BLOCK].tolist()


def _column(values: array[int], *, narrow: bool) -> np.ndarray:
    """``values`` (int64, never negative) as an exact-size NumPy array: uint32 where they fit and
    ``narrow`` (sizes, mtimes and name ends nearly always do; a 105 GB tar's offsets do not)."""
    column = np.frombuffer(values, np.int64) if values else np.zeros(0, np.int64)
    if narrow and (not len(column) or int(column.max()) < 1 << 32):
        return column.astype(np.uint32)
    return column.copy()  # drops the array's spare room


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


def list_path(name: str, *, full: bool) -> str:
    """The file-list path member ``name`` is labelled by: its :func:`list_key`, or (``full``)
    its whole name without a leading ``./``, for a list that names members that way."""
    return name.removeprefix("./") if full else list_key(name)


@dataclass(frozen=True)
class Labels:
    """A split's file list joined to a tar's :class:`TarIndex`, aligned with its members."""

    label: np.ndarray  # int32, one a member: its class index, -1 where the list does not name it
    full: np.ndarray  # bool, one a member: labelled by its full name (list_path(full=True)), not its list_key
    entries: int  # distinct paths in the list
    first_entry: str  # the list's first path (error messages show it)
    sha256: str  # of the list's bytes, as read


_LIST_CHUNK = 1 << 14  # bytes of the file list decoded and matched at a time


def read_labels(filelist: str | Path, split: str, members: TarIndex) -> Labels:
    """The labels of ``split`` for every member of ``members``, from the file list.

    ``filelist`` is either ``filelist_places365-standard.tar`` (the split's list is read
    from inside it) or the split's ``.txt`` list itself. A member is labelled by the entry
    for its :func:`list_key` or, failing that, for its full name; where the list names a
    path twice, its last entry counts. The list is streamed and matched against a sorted
    table of the members' two paths' hashes (each match confirmed on the strings), so the
    memory held is the members' (one int32 and a flag each), not the list's.
    """
    filelist = Path(filelist)
    if split not in LIST_NAMES:
        raise DataError(f"split must be one of {sorted(LIST_NAMES)}, got {split!r}")
    if not filelist.is_file():
        raise DataError(f"{filelist}: file list not found (fetch it with `inpnet data fetch --what filelist`)")
    table = _PathTable(members)
    # Python arrays, not NumPy ones, while one item at a time is set: a tenth of the time
    slot_label = array("i", [-1]) * (2 * len(members))  # member i's list_key at 2i, its full name at 2i + 1
    seen = bytearray(2 * len(members))  # a matched path's first slot, once counted
    unmatched = array("q")  # hashes of the entries that no member's path equals
    digest, first, matched = hashlib.sha256(), None, 0
    for paths, labels in _entries(filelist, LIST_NAMES[split], digest):
        first = first if first is not None or not paths else paths[0]
        for path, label, slots in zip(paths, labels, table.match(paths), strict=True):
            if not slots:
                unmatched.append(hash(path))
                continue
            for slot in slots:
                slot_label[slot] = label  # a later entry for the same path wins, as in a dict
            if not seen[slots[0]]:
                seen[slots[0]] = 1
                matched += 1
    if first is None:
        raise DataError(f"{filelist}: the {split} file list is empty")
    del table, seen
    entries = matched + _distinct_unmatched(unmatched, filelist, LIST_NAMES[split], members)
    by_slot = np.frombuffer(slot_label, np.int32) if slot_label else np.zeros(0, np.int32)
    by_key, by_name = by_slot[0::2], by_slot[1::2]
    return Labels(
        label=np.where(by_key >= 0, by_key, by_name).astype(np.int32),
        full=(by_key < 0) & (by_name >= 0),
        entries=entries,
        first_entry=first,
        sha256=digest.hexdigest(),
    )


class _PathTable:
    """Each member's two candidate list paths (slot ``2i``: its list_key, ``2i + 1``: its full
    name), found by the hash of a path: 32 bytes a member while labels are read."""

    def __init__(self, members: TarIndex) -> None:
        self.members = members
        hashes = np.fromiter(
            (
                hash(list_path(name, full=full))
                for _, names in members.name_blocks()
                for name in names
                for full in (False, True)
            ),
            np.int64,
            2 * len(members),
        )
        self.order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[self.order]

    def _path(self, slot: int) -> str:
        return list_path(self.members.name(slot >> 1), full=bool(slot & 1))

    def match(self, paths: list[str]) -> list[list[int]]:
        """For each path, the slots whose path equals it (ascending), [] for none."""
        hashes = np.fromiter((hash(p) for p in paths), np.int64, len(paths))
        lo = np.searchsorted(self.hashes, hashes, "left")
        hi = np.searchsorted(self.hashes, hashes, "right")
        found: list[list[int]] = [[] for _ in paths]
        for j in np.flatnonzero(hi > lo).tolist():
            a, b = int(lo[j]), int(hi[j])
            slots = [int(self.order[a])] if b - a == 1 else sorted(self.order[a:b].tolist())
            found[j] = [s for s in slots if self._path(s) == paths[j]]
        return found


def _distinct_unmatched(hashes: array[int], filelist: Path, wanted: str, members: TarIndex) -> int:
    """How many distinct paths the unmatched entries (by ``hashes``) hold. Distinct hashes are
    distinct paths; only hashes seen twice need the strings, read again from the list."""
    values, counts = np.unique(np.frombuffer(hashes, np.int64) if hashes else np.zeros(0, np.int64), return_counts=True)
    repeated = set(values[counts > 1].tolist())
    if not repeated:
        return len(values)
    table, paths = _PathTable(members), set[str]()
    for chunk, _ in _entries(filelist, wanted, hashlib.sha256()):
        maybe = [p for p in chunk if hash(p) in repeated]
        paths.update(p for p, slots in zip(maybe, table.match(maybe), strict=True) if not slots)
    return len(values) - len(repeated) + len(paths)


def _entries(filelist: Path, wanted: str, digest: hashlib._Hash) -> Iterator[tuple[list[str], list[int]]]:
    """The list's ``(paths, labels)``, a chunk at a time, its bytes fed to ``digest``; a line
    that is not ``<path> <class index>`` is an error naming its number. Lines are those of
    ``str.splitlines`` on the whole list (chunks are cut after a newline)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending, number = "", 0
    with _open_list(filelist, wanted) as handle:
        while True:
            raw = handle.read(_LIST_CHUNK)
            digest.update(raw)
            text = pending + decoder.decode(raw, final=not raw)
            cut = text.rfind("\n") + 1 if raw else len(text)
            text, pending = text[:cut], text[cut:]
            paths, labels = [], []
            for line in text.splitlines():
                number += 1
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2 or not _LABEL.fullmatch(parts[1]):
                    raise DataError(f"{filelist}: line {number} is not '<path> <class index>': {line[:80]!r}")
                paths.append(parts[0].lstrip("/"))
                labels.append(int(parts[1]))
            yield paths, labels
            if not raw:
                return


@contextmanager
def _open_list(filelist: Path, wanted: str) -> Iterator[IO[bytes]]:
    if not tarfile.is_tarfile(filelist):
        with open(filelist, "rb") as plain:
            yield plain
        return
    with tarfile.open(filelist) as tar:
        for info in tar:
            if info.isreg() and PurePosixPath(info.name).name == wanted:
                handle = tar.extractfile(info)
                assert handle is not None  # a regular file always has data
                yield handle
                return
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
