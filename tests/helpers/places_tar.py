"""Small Places365-layout tars with good and bad members, built by the shard and loader tests."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = ("/a/airfield", "/b/bazaar/indoor", "/c/coast")


def set_header_field(
    raw: bytes, header: int, start: int, end: int, value: bytes, *, fix_checksum: bool = True
) -> bytes:
    """``raw`` with bytes ``start:end`` of the tar header at byte ``header`` replaced by ``value``
    (NUL-padded or cut to fit) and, by default, the header checksum recomputed."""
    block = bytearray(raw[header : header + 512])
    block[start:end] = value.ljust(end - start, b"\0")[: end - start]
    if fix_checksum:
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\0 " % sum(block)
    return raw[:header] + bytes(block) + raw[header + 512 :]


def claims_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF) claiming ``width`` x ``height``: a decompression bomb."""
    pos = 2
    while jpeg[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
    return jpeg[: pos + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[pos + 9 :]


def jpeg_bytes(rng: np.random.Generator, width: int, height: int, **save: object) -> bytes:
    """A smooth random photo-like JPEG (upsampled noise, so it compresses like a photo)."""
    small = (rng.random((max(2, height // 8), max(2, width // 8), 3)) * 255).astype(np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, **save)
    return out.getvalue()


@dataclass
class PlacesTar:
    tar: Path
    filelist: Path
    good: dict[str, int]  # member name -> label, tar order
    bad: dict[str, str] = field(default_factory=dict)  # member name -> expected reason fragment


def add_file(tar: tarfile.TarFile, name: str, data: bytes, mtime: int = 1_600_000_000) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), mtime
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    tar.addfile(info)


def build_train_tar(
    root: Path, n_good: int = 24, seed: int = 0, bad: bool = True, sizes: tuple[int, int] = (72, 56)
) -> PlacesTar:
    """``data_large/<letter>/<category>/NNNNNNNN.jpg`` members plus the train file list."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    tar_path, list_path = root / "train_large_places365standard.tar", root / "places365_train_standard.txt"
    good: dict[str, int] = {}
    expected_bad: dict[str, str] = {}
    lines: list[str] = []
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_dir("data_large"))
        for i in range(n_good):
            label = i % len(CATEGORIES)
            rel = f"{CATEGORIES[label]}/{i + 1:08d}.jpg"
            w, h = sizes if i % 2 == 0 else sizes[::-1]
            add_file(tar, f"data_large{rel}", jpeg_bytes(rng, w, h, progressive=(i % 5 == 0)))
            good[f"data_large{rel}"] = label
            lines.append(f"{rel} {label}")
            if bad and i == n_good // 2:
                _add_bad_members(tar, rng, lines, expected_bad)
    list_path.write_text("\n".join(lines) + "\n")
    return PlacesTar(tar_path, list_path, good, expected_bad)


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def _add_bad_members(tar: tarfile.TarFile, rng: np.random.Generator, lines: list[str], bad: dict[str, str]) -> None:
    def listed(rel: str, data: bytes, reason: str) -> None:
        add_file(tar, f"data_large{rel}", data)
        lines.append(f"{rel} 0")
        bad[f"data_large{rel}"] = reason

    good = jpeg_bytes(rng, 160, 120)
    listed("/a/airfield/90000001.jpg", good[: len(good) // 2], "no end-of-image marker")
    listed("/a/airfield/90000002.jpg", b"", "empty file")
    listed("/a/airfield/90000003.jpg", b"hello, not an image\n" * 10, "not a JPEG image")
    half = len(good) // 2  # inside the entropy-coded data
    listed("/a/airfield/90000004.jpg", good[:half] + rng.bytes(600) + good[half + 600 :], "corrupt JPEG data")
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    listed("/a/airfield/90000005.jpg", png.getvalue(), "not a JPEG image")
    add_file(tar, "data_large/a/airfield/90000006.jpg", good)  # a fine image the list does not name
    bad["data_large/a/airfield/90000006.jpg"] = "not in the train file list"
    add_file(tar, "../escape.jpg", good)
    bad["../escape.jpg"] = "unsafe: path contains '..'"
    add_file(tar, "/abs/escape.jpg", good)
    bad["/abs/escape.jpg"] = "unsafe: absolute path"
    add_special(tar, "data_large/a/airfield/90000007.jpg", tarfile.SYMTYPE, "/etc/passwd")
    lines.append("/a/airfield/90000007.jpg 0")
    bad["data_large/a/airfield/90000007.jpg"] = "unsafe: symlink"
    add_special(tar, "data_large/a/airfield/90000008.jpg", tarfile.LNKTYPE, "data_large/a/airfield/00000001.jpg")
    bad["data_large/a/airfield/90000008.jpg"] = "unsafe: hardlink"
    add_special(tar, "data_large/dev", tarfile.CHRTYPE)
    bad["data_large/dev"] = "unsafe: device or fifo"
    add_special(tar, "data_large/pipe", tarfile.FIFOTYPE)
    bad["data_large/pipe"] = "unsafe: device or fifo"


def build_val_tar(root: Path, n: int = 8, seed: int = 1) -> PlacesTar:
    """``val_large/Places365_val_NNNNNNNN.jpg`` members plus the val file list."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    tar_path, list_path = root / "val_large.tar", root / "places365_val.txt"
    good: dict[str, int] = {}
    lines = []
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(n):
            name = f"Places365_val_{i + 1:08d}.jpg"
            add_file(tar, f"val_large/{name}", jpeg_bytes(rng, 64, 48))
            good[f"val_large/{name}"] = (7 * i) % 365
            lines.append(f"{name} {(7 * i) % 365}")
    list_path.write_text("\n".join(lines) + "\n")
    return PlacesTar(tar_path, list_path, good)


def filelist_tar(root: Path, train_list: Path, val_list: Path) -> Path:
    """``filelist_places365-standard.tar`` holding both lists (and the categories file)."""
    path = root / "filelist_places365-standard.tar"
    with tarfile.open(path, "w") as tar:
        add_file(tar, "categories_places365.txt", b"/a/airfield 0\n")
        tar.add(train_list, arcname="places365_train_standard.txt")
        tar.add(val_list, arcname="places365_val.txt")
    return path
