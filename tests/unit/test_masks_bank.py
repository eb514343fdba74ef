"""The evaluation mask bank: layout, reproducible bytes, external masks, mask files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inpnet.cli import main
from inpnet.errors import MaskError
from inpnet.images import read_mask_png
from inpnet.masks import BankMask, load_bank, write_bank

ARGS = dict(size=32, ratios=[0.0, 0.1, 0.5], per_cell=2, seed=4)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bank_layout_manifest_and_same_bytes(tmp_path: Path) -> None:
    patterns = ["random", "center", "free_form"]
    m1 = write_bank(tmp_path / "a", patterns=patterns, **ARGS)
    write_bank(tmp_path / "b", patterns=patterns, **ARGS)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert (tmp_path / "a" / "center" / "0.50" / "0001.png").is_file()
    data = json.loads(m1.read_text())
    assert len(data["masks"]) == 3 * 3 * 2
    masks = load_bank(tmp_path / "a")
    assert all(isinstance(m, BankMask) and m.path.is_absolute() for m in masks)
    for m in masks:
        hole = read_mask_png(m.path)
        assert hole.shape == (32, 32)
        assert m.achieved == pytest.approx(hole.mean(), abs=1e-6)
        if m.ratio == 0.0:
            assert not hole.any()
        raw = np.asarray(Image.open(m.path))
        assert raw.dtype == np.uint8 and set(np.unique(raw)) <= {0, 255}


def test_adding_a_pattern_keeps_other_cells(tmp_path: Path) -> None:
    write_bank(tmp_path / "a", patterns=["center", "random"], **ARGS)
    write_bank(tmp_path / "b", patterns=["edges", "random"], **{**ARGS, "per_cell": 3})
    a, b = _files(tmp_path / "a" / "random"), _files(tmp_path / "b" / "random")
    assert all(b[name] == data for name, data in a.items())  # more masks per cell, same first ones


def test_different_seed_changes_random_masks(tmp_path: Path) -> None:
    write_bank(tmp_path / "a", patterns=["random"], **ARGS)
    write_bank(tmp_path / "b", patterns=["random"], **{**ARGS, "seed": 5})
    assert _files(tmp_path / "a" / "random") != _files(tmp_path / "b" / "random")


def test_external_masks_are_binarised_resized_and_bucketed(tmp_path: Path) -> None:
    src = tmp_path / "nvidia"
    src.mkdir()
    for i, frac in enumerate([0.1, 0.12, 0.5, 0.52, 0.3]):
        arr = np.zeros((64, 80), np.uint8)
        arr[: int(round(frac * 64)), :] = 200  # non-binary grey: >= 50% counts as hole
        Image.fromarray(arr).convert("RGB").save(src / f"m{i}.png")
    (src / "broken.png").write_bytes(b"not a png")
    manifest = write_bank(tmp_path / "bank", patterns=["external"], external_dir=src, **{**ARGS, "ratios": [0.1, 0.5]})
    data = json.loads(manifest.read_text())
    assert [s["path"] for s in data["skipped"]] == ["broken.png"]
    cells = {(m.ratio, m.index): m for m in load_bank(tmp_path / "bank")}
    assert set(cells) == {(0.1, 0), (0.1, 1), (0.5, 0), (0.5, 1)}
    for m in cells.values():
        assert read_mask_png(m.path).shape == (32, 32)
        assert abs(m.achieved - m.ratio) <= 0.05
    with pytest.raises(MaskError, match="external"):
        write_bank(tmp_path / "x", patterns=["external"], **ARGS)
    with pytest.raises(MaskError, match="unknown mask patterns"):
        write_bank(tmp_path / "y", patterns=["center", "blobs"], **ARGS)
    assert not (tmp_path / "y").exists()


def test_read_mask_png_threshold_resize_and_errors(tmp_path: Path) -> None:
    arr = np.array([[127, 128], [0, 255]], np.uint8)
    Image.fromarray(arr).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_mask_png(tmp_path / "grey.png"), [[False, True], [False, True]])
    np.testing.assert_array_equal(read_mask_png(tmp_path / "grey.png", invert=True), [[True, False], [True, False]])
    big = read_mask_png(tmp_path / "grey.png", size=4)
    assert big.shape == (4, 4) and big[:2, 2:].all() and not big[:2, :2].any()
    assert read_mask_png(tmp_path / "grey.png", size=(6, 2)).shape == (6, 2)
    Image.fromarray(np.array([[0, 40000]], np.uint16)).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_mask_png(tmp_path / "deep.png"), [[False, True]])
    with pytest.raises(MaskError, match="expected 4x4"):
        read_mask_png(tmp_path / "grey.png", size=4, resize=False)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(MaskError, match=r"bad.png"):
        read_mask_png(tmp_path / "bad.png")


def test_load_bank_reports_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(MaskError, match="inpnet masks bank"):
        load_bank(tmp_path)
    write_bank(tmp_path, patterns=["center"], **ARGS)
    (tmp_path / "center" / "0.10" / "0000.png").unlink()
    with pytest.raises(MaskError, match="missing"):
        load_bank(tmp_path)


def test_cli_bank_and_show(tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bank"
    params = str(repo_root / "params.yaml")
    args = [
        "masks",
        "bank",
        "--out",
        str(out),
        "--size",
        "32",
        "--patterns",
        "center,edges",
        "--ratios",
        "0.1,0.5",
        "--per-cell",
        "2",
        "--seed",
        "3",
        "--params",
        params,
    ]
    assert main(args) == 0
    assert len(load_bank(out)) == 8
    assert main(["masks", "show", str(out)]) == 0
    assert "edges" in capsys.readouterr().out
    assert main([*args[:-2], "--ratios", "0.1,0.95", "--params", params]) == 2


def test_decompression_bomb_mask_is_a_mask_error(tmp_path: Path) -> None:
    from helpers.places_tar import claims_size, jpeg_bytes

    for side in (8000, 60000):
        path = tmp_path / f"m{side}.jpg"
        path.write_bytes(claims_size(jpeg_bytes(np.random.default_rng(0), 40, 40), side, side))
        with pytest.raises(MaskError, match=rf"m{side}.jpg: mask is .*over the limit of 50.0"):
            read_mask_png(path)
