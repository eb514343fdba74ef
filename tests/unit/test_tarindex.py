"""The header-only tar reader on hostile input: it ends, in bounded time and memory, with a
member list or a project error naming the byte offset and the field, never a hang or a traceback."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from helpers.places_tar import set_header_field
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inpnet.data import tarindex
from inpnet.data.tarindex import TarIndex, index_tar, member_problem, read_labels
from inpnet.errors import DataError, InpnetError

_FIELDS = {
    "name": (0, 100),
    "mode": (100, 108),
    "size": (124, 136),
    "mtime": (136, 148),
    "chksum": (148, 156),
    "typeflag": (156, 157),
    "linkname": (157, 257),
    "magic": (257, 265),
    "prefix": (345, 500),
}


def tar_bytes(*members: tuple[str, bytes], fmt: int = tarfile.USTAR_FORMAT, **pax: str) -> bytes:
    """A small tar in memory: regular files ``(name, data)``, optionally with pax headers."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_600_000_000
            info.pax_headers = dict(pax)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def set_field(raw: bytes, header: int, field: str, value: bytes, *, fix_checksum: bool = True) -> bytes:
    return set_header_field(raw, header, *_FIELDS[field], value, fix_checksum=fix_checksum)


def write(tmp_path: Path, raw: bytes, name: str = "t.tar") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


TWO = tar_bytes(("top/a.jpg", b"x" * 700), ("top/b.jpg", b"y" * 100))


def test_plain_tar_is_indexed(tmp_path: Path) -> None:
    members = index_tar(write(tmp_path, TWO))
    assert [(m.name, m.offset, m.size) for m in members] == [("top/a.jpg", 512, 700), ("top/b.jpg", 2048, 100)]


@pytest.mark.timeout(20)
def test_negative_octal_size_is_an_error_not_a_loop(tmp_path: Path) -> None:
    path = write(tmp_path, set_field(TWO, 0, "size", b"-0000001000\0"))
    with pytest.raises(DataError, match=r"byte 0\b.*size field") as err:
        index_tar(path)
    assert "-0000001000" in str(err.value) and "\n" not in str(err.value)


def test_base256_size_beyond_the_file_is_an_error(tmp_path: Path) -> None:
    huge = b"\x80" + (2**80).to_bytes(11, "big")
    path = write(tmp_path, set_field(TWO, 1536, "size", huge))
    with pytest.raises(DataError, match=r"byte 1536\b.*size field.*1208925819614629174706176 bytes.*past the end"):
        index_tar(path)


def test_negative_base256_size_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, set_field(TWO, 0, "size", b"\xff" * 12))
    with pytest.raises(DataError, match=r"byte 0\b.*size field.*negative"):
        index_tar(path)


def test_8_gib_size_in_a_small_file_reads_nothing_large(tmp_path: Path) -> None:
    eight_gib = b"\x80" + (8 << 30).to_bytes(11, "big")
    path = write(tmp_path, set_field(TWO, 0, "size", eight_gib))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"size field.*8589934592 bytes.*past the end of the file"):
            index_tar(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes while refusing a header"


def test_non_octal_digits_name_the_field(tmp_path: Path) -> None:
    for bad in (b"0000\xd9\xa11000\0", b"00_00001000\0", b"+0000001000\0"):  # Arabic-Indic digit, underscore, sign
        with pytest.raises(DataError, match=r"byte 0\b.*size field .* is not an octal number"):
            index_tar(write(tmp_path, set_field(TWO, 0, "size", bad)))


@pytest.mark.parametrize("into", [1, 100, 511])
def test_tar_cut_inside_a_header_is_an_error(tmp_path: Path, into: int) -> None:
    with pytest.raises(DataError, match=rf"ends at byte {1536 + into}, {into} bytes into the header at byte 1536"):
        index_tar(write(tmp_path, TWO[: 1536 + into]))


def test_tar_cut_inside_member_data_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"member 'top/b.jpg'.*100 bytes.*past the end"):
        index_tar(write(tmp_path, TWO[: 1536 + 512 + 40]))


def test_tar_without_end_blocks_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="inpnet.data.tarindex"):
        members = index_tar(write(tmp_path, TWO[: 1536 + 1024]))
    assert len(members) == 2
    assert "no end-of-archive" in caplog.text


def test_oversized_metadata_header_is_refused(tmp_path: Path) -> None:
    raw = tar_bytes(("top/" + "n" * 200 + ".jpg", b"z"), fmt=tarfile.GNU_FORMAT)  # GNU long name: an 'L' header first
    assert raw[156:157] == b"L"
    big = b"%011o\0" % (2 << 20)
    raw = set_field(raw, 0, "size", big) + bytes(2 << 20)
    with pytest.raises(DataError, match=r"byte 0\b.*long-name header of 2097152 bytes"):
        index_tar(write(tmp_path, raw))


@pytest.mark.parametrize("record", [b"0 path=x\n", b"-5 path=x\n", b"99 path=x\n", b"8 nokey\n", b"x path=y\n"])
def test_bad_pax_records_are_errors(tmp_path: Path, record: bytes) -> None:
    raw = tar_bytes(("top/a.jpg", b"x"), fmt=tarfile.PAX_FORMAT, comment="hello")
    assert raw[156:157] == b"x"
    payload_size = int(raw[124:135], 8)
    raw = set_field(raw, 0, "size", b"%011o\0" % len(record))
    raw = raw[:512] + record.ljust(-(-payload_size // 512) * 512, b"\0") + raw[512 + -(-payload_size // 512) * 512 :]
    with pytest.raises(DataError, match=r"pax"):
        index_tar(write(tmp_path, raw))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("size", "-1"),
        ("size", "1e400"),
        ("size", "²"),
        ("size", "12 "),
        ("mtime", "1e400"),
        ("mtime", "abc"),
        ("mtime", "١"),  # noqa: RUF001 - a non-ASCII digit on purpose
    ],
)
def test_bad_pax_numbers_are_errors(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(DataError, match=rf"byte \d+: pax {key} .* is not a valid number"):
        index_tar(write(tmp_path, tar_bytes(("top/a.jpg", b"x"), fmt=tarfile.PAX_FORMAT, **{key: value})))


def test_non_utf8_member_name_is_a_member_problem(tmp_path: Path) -> None:
    raw = set_field(TWO, 0, "name", b"top/caf\xe9.jpg")
    member = index_tar(write(tmp_path, raw))[0]
    assert member.name == "top/caf\udce9.jpg"
    assert member_problem(member) == "name is not valid UTF-8: 'top/caf\\xe9.jpg'"


def test_non_ascii_digit_label_names_the_line(tmp_path: Path) -> None:
    lst = write(tmp_path, "/a/x.jpg 0\n/a/y.jpg ²\n".encode(), "places365_train_standard.txt")
    with pytest.raises(DataError, match=r"line 2 is not '<path> <class index>'"):
        read_labels(lst, "train", TarIndex.empty())
    lst.write_text("/a/x.jpg 0\n/a/y.jpg ١٢\n")  # digits int() would accept
    with pytest.raises(DataError, match=r"line 2"):
        read_labels(lst, "train", TarIndex.empty())


# ------------------------------------------------------------------- property tests

_BASE = tar_bytes(("top/a.jpg", b"a" * 700), ("top/b.jpg", b"b" * 30))
_BASE_PAX = tar_bytes(("top/" + "p" * 120 + ".jpg", b"c" * 9), fmt=tarfile.PAX_FORMAT, comment="c")
_BASE_GNU = tar_bytes(("top/" + "g" * 120 + ".jpg", b"d" * 9), fmt=tarfile.GNU_FORMAT)


def _headers(raw: bytes) -> list[int]:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return sorted({0, *(i.offset for i in tar.getmembers()), *(i.offset_data - 512 for i in tar.getmembers())})


def _check(tmp_path: Path, raw: bytes) -> None:
    """The reader's contract on ``raw``: members that fit the file, or a project error."""
    path = tmp_path / "h.tar"
    path.write_bytes(raw)
    real_pread = os.pread
    largest = []

    def pread(fd: int, n: int, offset: int) -> bytes:
        largest.append(n)
        return real_pread(fd, n, offset)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tarindex.os, "pread", pread)
        try:
            members = index_tar(path)
        except InpnetError as err:
            assert str(err) and "\n" not in str(err)  # noqa: PT017 - an error may happen, as one clean line
            return
    assert max(largest, default=0) <= max(len(raw), 512)
    assert len(members) <= len(raw) // 512
    for m in members:
        assert m.offset >= 0 and m.size >= 0 and m.offset + (m.size if m.kind == "file" else 0) <= len(raw)
        member_problem(m)  # never raises


_PROPERTY = settings(max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PROPERTY
@given(
    base=st.sampled_from([_BASE, _BASE_PAX, _BASE_GNU]),
    header=st.integers(0, 3),
    field=st.sampled_from(sorted(_FIELDS)),
    value=st.binary(max_size=16)
    | st.sampled_from([b"-1", b"\x80" + b"\xff" * 11, b"\xff" * 12, b"77777777777", b" 12 \0"]),
    fix=st.booleans(),
)
def test_any_header_field_gives_members_or_a_project_error(
    tmp_path: Path, base: bytes, header: int, field: str, value: bytes, fix: bool
) -> None:
    offsets = _headers(base)
    _check(tmp_path, set_field(base, offsets[header % len(offsets)], field, value, fix_checksum=fix))


@_PROPERTY
@given(base=st.sampled_from([_BASE, _BASE_PAX, _BASE_GNU]), cut=st.integers(0, 4096), noise=st.binary(max_size=600))
def test_any_truncation_or_trailing_garbage_gives_members_or_a_project_error(
    tmp_path: Path, base: bytes, cut: int, noise: bytes
) -> None:
    _check(tmp_path, base[:cut] + noise)


@_PROPERTY
@given(
    payload=st.binary(max_size=300)
    | st.lists(
        st.tuples(st.integers(-3, 60), st.sampled_from(["path", "size", "mtime", "x"]), st.text(max_size=12)),
        max_size=4,
    ).map(
        lambda recs: b"".join(b"%d %s=%s\n" % (n, k.encode(), v.encode("utf-8", "surrogateescape")) for n, k, v in recs)
    )
)
def test_any_pax_payload_gives_members_or_a_project_error(tmp_path: Path, payload: bytes) -> None:
    raw = set_field(_BASE_PAX, 0, "size", b"%011o\0" % len(payload))
    old = -(-int(_BASE_PAX[124:135], 8) // 512) * 512
    _check(tmp_path, raw[:512] + payload.ljust(-(-len(payload) // 512) * 512, b"\0") + raw[512 + old :])


# ------------------------------------------------------------------- the compact index and the list join


def test_index_columns_and_members_agree(tmp_path: Path) -> None:
    raw = tar_bytes(("top/a.jpg", b"x" * 700), ("top/" + "n" * 150 + ".jpg", b"y"), fmt=tarfile.GNU_FORMAT)
    index = index_tar(write(tmp_path, raw))
    assert len(index) == 2 and index.sizes.dtype == np.uint32 and index.offsets.dtype == np.int64
    assert [m.name for m in index] == ["top/a.jpg", "top/" + "n" * 150 + ".jpg"] == [index.name(i) for i in (0, 1)]
    assert index[-1] == index[1] and index[:1] == [index[0]] and index[1].ordinal == 1
    assert index.take(np.array([1])).name(0) == index.name(1)
    with pytest.raises(IndexError, match="member 2 of a tar index of 2"):
        index[2]


def _dict_labels(text: str) -> dict[str, int]:
    """The file list as a plain dict, the way the labels were read before the compact join."""
    labels = {}
    for line in text.splitlines():
        if line.strip():
            path, label = line.split()
            labels[path.lstrip("/")] = int(label)
    return labels


_NAMES = ["top/a/x.jpg", "top/a/x.jpg", "./top/b/caf\xe9.jpg", "c/d.jpg", "top/e.jpg", "top/f.jpg", "top"]
_LIST = "/a/x.jpg 3\r\n\n/b/café.jpg 4\rc/d.jpg 5\x0b/e.jpg 1\n/e.jpg 2\n/gone.jpg 0\n/gone.jpg 0\n/gone2.jpg 9\n"


@pytest.mark.parametrize("colliding", [False, True])
@pytest.mark.parametrize("chunk", [3, 1 << 16])
def test_labels_join_agrees_with_a_dict_of_the_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, colliding: bool, chunk: int
) -> None:
    """Per member: the label of its list_key, else of its full name; the last entry of a path wins;
    distinct paths counted once (matched or not). Small chunks cut lines and UTF-8 sequences;
    a hash that every string shares leaves only the string comparisons."""
    index = index_tar(write(tmp_path, tar_bytes(*((n, b"z") for n in _NAMES))))
    lst = write(tmp_path, _LIST.encode(), "places365_train_standard.txt")
    monkeypatch.setattr(tarindex, "_LIST_CHUNK", chunk)
    if colliding:
        monkeypatch.setattr(tarindex, "hash", lambda value: 7, raising=False)
    labels = read_labels(lst, "train", index)
    expected = _dict_labels(_LIST)
    by_key = [expected.get(tarindex.list_key(n)) for n in _NAMES]
    by_name = [expected.get(n.removeprefix("./")) for n in _NAMES]
    pairs = list(zip(by_key, by_name, strict=True))
    assert labels.label.tolist() == [k if k is not None else (f if f is not None else -1) for k, f in pairs]
    assert labels.full.tolist() == [k is None and f is not None for k, f in pairs]
    assert labels.label.tolist() == [3, 3, 4, 5, 2, -1, -1] and labels.full.tolist()[3]  # c/d.jpg by its full name
    assert labels.entries == len(expected) == 6 and labels.first_entry == "a/x.jpg"
    assert labels.sha256 == hashlib.sha256(_LIST.encode()).hexdigest()


@pytest.mark.parametrize("chunk", [4, 1 << 16])
def test_list_errors_name_the_same_line_in_any_chunking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(tarindex, "_LIST_CHUNK", chunk)
    lst = write(tmp_path, b"/a/x.jpg 0\r\n\n/a/\xe9.jpg 1\n/a/y.jpg 2 3\n", "places365_train_standard.txt")
    with pytest.raises(DataError, match=r"line 4 is not '<path> <class index>': '/a/y.jpg 2 3'"):
        read_labels(lst, "train", TarIndex.empty())
    lst.write_bytes(b"\n \n")
    with pytest.raises(DataError, match="the train file list is empty"):
        read_labels(lst, "train", TarIndex.empty())
