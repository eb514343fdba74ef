"""The evaluator and its sources end to end on tiny images, a tiny bank and the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_error_lines
from helpers.params import params_for_tests
from PIL import Image

from inpnet.cli import main
from inpnet.config import EvalConfig
from inpnet.errors import DataError
from inpnet.evaluate.evaluator import evaluate
from inpnet.evaluate.methods import resolve_method
from inpnet.evaluate.sources import EvalImage, FolderMasks, Skipped, open_images

SIZE = 32


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([xx, yy, 1 - xx * yy], -1) * 200 + rng.integers(0, 40, (h, w, 3))
    return base.clip(0, 255).astype(np.uint8)  # (H, W, 3)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    d = tmp_path / "images"
    d.mkdir()
    for i, (h, w) in enumerate([(40, 48), (36, 36), (48, 40)]):
        Image.fromarray(_photo(rng, h, w)).save(d / f"img{i}.png")
    return d


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inpnet.masks import write_bank

    out = tmp_path_factory.mktemp("bank")
    write_bank(out, size=SIZE, patterns=["center", "random"], ratios=[0.1, 0.5], per_cell=2, seed=0)
    return out


def _cfg(**kw) -> EvalConfig:
    return EvalConfig(batch_size=4, grid_images=2, workers=1, **kw)


def _numbers_only(node) -> bool:
    if isinstance(node, dict):
        return all(_numbers_only(v) for v in node.values())
    return node is None or (isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node))


@pytest.mark.slow
def test_end_to_end_cli_writes_every_output(image_dir: Path, bank_dir: Path, tmp_path: Path) -> None:
    ref = tmp_path / "reports" / "baselines" / "navier_stokes"
    assert (
        main(
            [
                "evaluate",
                "--method",
                "navier_stokes",
                "--images",
                str(image_dir),
                "--masks",
                str(bank_dir),
                "--out",
                str(ref),
            ]
        )
        == 0
    )
    out = tmp_path / "reports" / "telea"
    code = main(
        [
            "evaluate",
            "--method",
            "telea",
            "--images",
            str(image_dir),
            "--masks",
            str(bank_dir),
            "--out",
            str(out),
            "--save-outputs",
            "--reference",
            str(tmp_path / "reports" / "baselines"),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert _numbers_only(metrics)
    assert metrics["overall"]["n"] == 3 * 4 and metrics["overall"]["fid"] is None
    assert set(metrics["patterns"]) == {"center", "random"}
    assert set(metrics["buckets"]["center"]) == {"0.10", "0.50"}
    bucket = metrics["buckets"]["random"]["0.50"]
    assert set(bucket) == {"psnr", "ssim", "fid", "kid", "n"} and bucket["n"] == 3
    assert metrics["buckets"]["center"]["0.10"]["psnr"] > bucket["psnr"]  # bigger holes are harder
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "telea" and report["fid"]["available"] is False and report["fid"]["reason"]
    assert report["images"] == {"source": str(image_dir), "kind": "folder", "count": 3, "size": SIZE}
    assert report["masks"]["kind"] == "bank" and report["skipped"] == []
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and set(rows[0]) == {
        "image",
        "pattern",
        "ratio",
        "achieved_ratio",
        "mask",
        "psnr",
        "ssim",
        "excluded",
    }
    assert all(r["excluded"] == "" for r in rows) and report["excluded"] == [] and metrics["overall"]["excluded"] == 0
    # bank pairing: image number k uses mask index k % per_cell in every cell
    assert {(r["image"], r["mask"]) for r in rows if r["pattern"] == "center" and r["ratio"] == "0.10"} == {
        ("img0", "center/0.10/0000.png"),
        ("img1", "center/0.10/0001.png"),
        ("img2", "center/0.10/0000.png"),
    }
    table = (out / "table.md").read_text()
    assert "navier_stokes (reference)" in table and "FID/KID unavailable" in table
    for name in ("plots/psnr_by_ratio.png", "plots/ssim_by_ratio.png", "grid.png"):
        assert (out / name).is_file(), name
    saved = sorted(p.relative_to(out / "outputs").as_posix() for p in (out / "outputs").rglob("*.png"))
    assert len(saved) == 12 and "center/0.50/img1.png" in saved
    # the saved composite is the scored one: known pixels untouched, 8 bits
    row = next(r for r in rows if r["image"] == "img1" and r["pattern"] == "center" and r["ratio"] == "0.50")
    hole = np.asarray(Image.open(bank_dir / row["mask"])) >= 128
    composite = np.asarray(Image.open(out / "outputs" / "center" / "0.50" / "img1.png"))
    truth = np.asarray(Image.open(image_dir / "img1.png").resize((SIZE, SIZE), Image.BICUBIC))
    assert composite.shape == (SIZE, SIZE, 3)
    assert np.abs(composite[~hole].astype(int) - truth[~hole]).max() <= 1  # same resize, 8-bit rounding


def test_broken_files_are_skipped_and_listed(image_dir: Path, bank_dir: Path, tmp_path: Path) -> None:
    (image_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (image_dir / "img0.png").read_bytes()
    (image_dir / "truncated.png").write_bytes(good[: len(good) // 2])
    (image_dir / "notes.txt").write_text("ignored: not an image extension")
    result = evaluate(resolve_method("telea"), image_dir, bank_dir, out_dir=tmp_path / "out", cfg=_cfg())
    skipped = {Path(s["path"]).name for s in result.report["skipped"]}
    assert skipped == {"broken.jpg", "truncated.png"}
    assert result.metrics["overall"]["n"] == 3 * 4 and result.report["images"]["count"] == 3
    table = (tmp_path / "out" / "table.md").read_text()
    assert "## Skipped files" in table and "broken.jpg" in table and "truncated.png" in table


def test_empty_folder_is_a_one_line_error_with_exit_code_2(tmp_path: Path, bank_dir: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(
        [
            "evaluate",
            "--method",
            "telea",
            "--images",
            str(empty),
            "--masks",
            str(bank_dir),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(cli_error_lines(err)) == 1 and "no images" in err and str(empty) in err
    assert main(["compare", "--out", str(tmp_path / "c")]) == 2


def test_all_images_unreadable_is_an_error(tmp_path: Path, bank_dir: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"nothing could be evaluated.*a.jpg"):
        evaluate(resolve_method("telea"), d, bank_dir, out_dir=tmp_path / "o", cfg=_cfg())


def _mask_files(d: Path, names: list[str], size: tuple[int, int] = (SIZE, SIZE)) -> None:
    d.mkdir()
    for i, n in enumerate(names):
        m = np.zeros(size[::-1], np.uint8)
        m[: 4 + 3 * i, :] = 255
        Image.fromarray(m).save(d / f"{n}.png")


def _image(number: int, name: str, source_size=(SIZE, SIZE)) -> EvalImage:
    import torch

    return EvalImage(number, name, torch.zeros(3, SIZE, SIZE), source_size)


def test_external_masks_pair_by_stem_when_every_name_matches(tmp_path: Path) -> None:
    _mask_files(tmp_path / "m", ["b", "a", "c"])
    masks = FolderMasks(tmp_path / "m")
    assert masks.pair(["a", "b"]).startswith("stem")
    (m,) = masks.masks_for(_image(0, "b"), SIZE)
    assert m.path.name == "b.png" and m.pattern == "external"
    assert m.ratio == round(m.achieved, 1) and m.hole.shape == (SIZE, SIZE)


def test_external_masks_use_a_seeded_permutation_otherwise(tmp_path: Path) -> None:
    names = [f"m{i}" for i in range(8)]
    _mask_files(tmp_path / "m", names)

    def assignment(seed: int) -> list[str]:
        masks = FolderMasks(tmp_path / "m", seed=seed)
        assert masks.pair(["a", "m1"]).startswith("permutation")  # "a" has no mask of its stem
        return [masks.masks_for(_image(i, "a"), SIZE)[0].path.stem for i in range(16)]

    first = assignment(0)
    assert first == assignment(0) and first != assignment(1)
    assert sorted(first[:8]) == sorted(names) and first[8:] == first[:8]  # each mask once, then cycling
    documented = np.random.default_rng(0).permutation(8)  # over the masks sorted by name
    assert first[:8] == [f"m{int(k)}" for k in documented]


def test_mask_size_mismatch_and_grey_values(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    grey = np.full((20, 20), 100, np.uint8)
    grey[:, 10:] = 200  # >= 128 -> hole
    Image.fromarray(grey).save(d / "a.png")
    resize = FolderMasks(d)
    resize.pair(["a"])
    (m,) = resize.masks_for(_image(0, "a", source_size=(40, 40)), SIZE)
    assert m.hole.shape == (SIZE, SIZE) and abs(m.achieved - 0.5) < 0.05 and m.hole[:, -1].all()
    refuse = FolderMasks(d, mismatch="refuse")
    refuse.pair(["a"])
    (s,) = refuse.masks_for(_image(0, "a", source_size=(40, 40)), SIZE)
    assert isinstance(s, Skipped) and "20x20" in s.reason and "40x40" in s.reason


def test_folder_images_resize_and_crop(image_dir: Path) -> None:
    src = open_images(image_dir, size=SIZE)
    images = list(src)
    assert [i.name for i in images] == ["img0", "img1", "img2"] and src.names() == ["img0", "img1", "img2"]
    assert images[0].image.shape == (3, SIZE, SIZE) and images[0].source_size == (48, 40)
    assert float(images[0].image.min()) >= 0 and float(images[0].image.max()) <= 1
    with pytest.raises(DataError, match="not a folder"):
        open_images(image_dir / "missing", size=SIZE)


def test_model_size_mismatch_is_refused(image_dir: Path, bank_dir: Path, tmp_path: Path) -> None:
    from inpnet.errors import ConfigError
    from inpnet.evaluate.methods import ModelMethod

    method = ModelMethod("m", lambda image, mask: image, image_size=64)
    with pytest.raises(ConfigError, match=r"64 px.*32 px"):
        evaluate(method, image_dir, bank_dir, out_dir=tmp_path / "o", cfg=_cfg())


def test_fid_and_kid_per_bucket_with_a_stand_in_extractor(
    image_dir: Path, bank_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plumbing only: a random feature network stands in for InceptionV3."""
    import torch

    from inpnet.evaluate import fid

    def extractor(images: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        proj = torch.randn(3 * 4 * 4, 8, generator=g)
        pooled = torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)  # (B, 48)
        return pooled @ proj  # (B, 8)

    monkeypatch.setattr(fid, "fid_available", lambda path: (True, "ok"))
    monkeypatch.setattr(fid.FIDScorer, "from_weights", classmethod(lambda cls, path, device="cpu": cls(extractor)))
    result = evaluate(
        resolve_method("telea"),
        image_dir,
        bank_dir,
        out_dir=tmp_path / "o",
        cfg=_cfg(fid_weights="stand-in.pth", kid_subset_size=3),
    )
    m = result.metrics
    assert isinstance(m["overall"]["fid"], float) and m["overall"]["fid"] >= 0
    cell = m["buckets"]["center"]["0.50"]
    assert isinstance(cell["fid"], float) and isinstance(cell["kid"], float)
    assert result.report["fid"]["available"] is True
    table = (tmp_path / "o" / "table.md").read_text()
    assert "## FID by pattern and hole ratio" in table and "FID/KID unavailable" not in table


def test_shard_folder_images_come_from_the_loader(
    tmp_path: Path, bank_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder with manifest.json is read through inpnet.data.loader.iter_eval_images (stand-in here)."""
    import sys
    import types

    import torch

    calls = {}

    def iter_eval_images(shards, *, image_size):
        calls.update(shards=shards, image_size=image_size)
        g = torch.Generator().manual_seed(0)
        for i in range(3):
            yield f"val_{i:04d}", torch.rand(3, image_size, image_size, generator=g)

    fake = types.ModuleType("inpnet.data.loader")
    fake.iter_eval_images = iter_eval_images
    monkeypatch.setitem(sys.modules, "inpnet.data.loader", fake)
    shards = tmp_path / "val"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    result = evaluate(resolve_method("telea"), shards, bank_dir, out_dir=tmp_path / "o", cfg=_cfg(), limit=2)
    assert calls == {"shards": shards, "image_size": SIZE}
    assert result.report["images"]["kind"] == "shards" and result.report["images"]["count"] == 2
    assert {r["image"] for r in result.rows} == {"val_0000", "val_0001"}


@pytest.mark.slow
def test_a_trained_checkpoint_folder_is_evaluated(
    image_dir: Path, bank_dir: Path, tmp_path: Path, repo_root: Path
) -> None:
    """A real (untrained) inpnet_tiny checkpoint written by the trainer's checkpoint writer."""
    import torch

    from inpnet.models.build import build_model
    from inpnet.train.checkpoint import save_checkpoint

    variant = params_for_tests().variant("inpnet_tiny")
    assert variant.model.img_size == SIZE
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "models" / "inpnet_tiny",
        variant=variant,
        modules={"model": build_model(variant.model)},
        state={"step": 0},
        meta={"step": 0},
    )
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--method",
                str(ckpt),
                "--images",
                str(image_dir),
                "--masks",
                str(bank_dir),
                "--out",
                str(out),
                "--limit",
                "2",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "inpnet_tiny" and report["method_settings"]["kind"] == "model"
    assert report["method_settings"]["family"] == "inpnet" and report["pairs"] == 2 * 4
    from inpnet.registry.tracking import file_sha256
    from inpnet.train.checkpoint import load_model, weights_sha256

    assert report["method_settings"]["weights_sha256"] == weights_sha256(load_model(ckpt)[0])
    assert report["masks"]["manifest_sha256"] == file_sha256(bank_dir / "manifest.json")
    assert json.loads((out / "metrics.json").read_text())["overall"]["n"] == 8


def test_decompression_bombs_are_skipped_before_decoding(image_dir: Path) -> None:
    from helpers.places_tar import claims_size, jpeg_bytes

    good = jpeg_bytes(np.random.default_rng(0), 40, 40)
    (image_dir / "bomb.jpg").write_bytes(claims_size(good, 60000, 60000))  # PIL's own limit raises on open
    (image_dir / "big.jpg").write_bytes(claims_size(good, 8000, 8000))  # under PIL's limit: it would decode 192 MB
    source = open_images(image_dir, size=SIZE)
    assert len(list(source)) == 3
    reasons = {Path(s.path).name: s.reason for s in source.skipped}
    assert set(reasons) == {"bomb.jpg", "big.jpg"}
    assert reasons["big.jpg"] == "image is 8000x8000 (64.0 megapixels), over the limit of 50.0; pass a smaller image"
    assert reasons["bomb.jpg"].startswith("image is over the limit of 50.0 megapixels (Image size (3600000000 pixels)")


def test_an_unwritable_out_is_a_one_line_error_before_any_work(
    image_dir: Path, bank_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("x")
    cases = {
        tmp_path / "a-file": "the output folder is a file",
        tmp_path / "a-file" / "ev": "a file of that name exists where a folder is needed",
    }
    if Path("/sys/kernel").is_dir():  # even root cannot write /sys (chmod does not stop root)
        cases[Path("/sys/ev")] = "cannot lock the output folder"
    for out, reason in cases.items():
        capsys.readouterr()
        code = main(
            [
                "evaluate",
                "--method",
                "telea",
                "--images",
                str(image_dir),
                "--masks",
                str(bank_dir),
                "--out",
                str(out),
                "--workers",
                "1",
            ]
        )
        lines = cli_error_lines(capsys.readouterr().err)
        assert (
            code == 2 and len(lines) == 1 and lines[0].startswith(f"inpnet: error: {out}: ") and reason in lines[0]
        ), lines


def test_a_report_file_that_cannot_be_written_is_named_and_no_temp_file_stays(
    image_dir: Path, bank_dir: Path, tmp_path: Path
) -> None:
    from inpnet.errors import OutputError

    out = tmp_path / "ev"
    (out / "metrics.json").mkdir(parents=True)  # a folder where the report writes a file
    with pytest.raises(
        OutputError, match=r"ev/metrics.json: cannot write: a folder stands where the file would be written; "
    ):
        evaluate(resolve_method("telea"), image_dir, bank_dir, out_dir=out, cfg=_cfg(), limit=1)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_degenerate_pairs_are_listed_and_left_out_of_every_mean(image_dir: Path, tmp_path: Path) -> None:
    """An all-known mask once scored 100 dB and lifted the headline to 70.85 dB from 3 pairs."""
    d = tmp_path / "m"
    d.mkdir()
    hole = np.zeros((SIZE, SIZE), np.uint8)
    hole[8:20, 8:20] = 255
    for name, mask in {"img0": hole, "img1": np.zeros_like(hole), "img2": np.full_like(hole, 255)}.items():
        Image.fromarray(mask).save(d / f"{name}.png")  # paired by stem: one partial, one empty, one full hole
    out = tmp_path / "ev"
    result = evaluate(resolve_method("telea"), image_dir, d, out_dir=out, cfg=_cfg())
    overall = result.metrics["overall"]
    assert overall["n"] == 1 and overall["excluded"] == 2 and overall["psnr"] < 60
    (scored,) = [r for r in result.rows if not r["excluded"]]
    assert scored["image"] == "img0" and overall["psnr"] == round(scored["psnr"], 6)
    assert all(b["n"] == 1 for cells in result.metrics["buckets"].values() for b in cells.values())
    assert result.metrics["patterns"]["external"]["n"] == 1
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == 1
    assert {(x["image"], x["reason"].split(":")[0]) for x in report["excluded"]} == {
        ("img1", "empty hole"),
        ("img2", "full hole"),
    }
    with open(out / "per_image.csv") as f:
        rows = {r["image"]: r for r in csv.DictReader(f)}
    assert rows["img1"]["excluded"].startswith("empty hole") and rows["img1"]["psnr"] == ""
    assert rows["img2"]["excluded"].startswith("full hole") and rows["img0"]["excluded"] == ""
    table = (out / "table.md").read_text()
    assert "## Pairs left out of every mean" in table and "- telea: 1 pair(s), empty hole: " in table


def test_an_exact_match_is_excluded_not_scored_100_db(bank_dir: Path, tmp_path: Path) -> None:
    from inpnet.evaluate.methods import ModelMethod

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(2):
        Image.fromarray(np.full((SIZE, SIZE, 3), 90 + i, np.uint8)).save(flat / f"f{i}.png")
    # a "method" that predicts the right colour: every composite equals the original exactly
    exact = ModelMethod("exact", lambda image, mask: image.clone(), image_size=None)
    with pytest.raises(DataError, match=r"all 8 pairs are left out .*exact match"):
        evaluate(exact, flat, bank_dir, out_dir=tmp_path / "ev", cfg=_cfg())


def test_only_degenerate_masks_is_a_one_line_error(image_dir: Path, tmp_path: Path, capsys) -> None:
    d = tmp_path / "m"
    d.mkdir()
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(d / "empty.png")
    code = main(
        ["evaluate", "--method", "telea", "--images", str(image_dir), "--masks", str(d), "--out", str(tmp_path / "o")]
    )
    lines = cli_error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1 and "all 3 pairs are left out" in lines[0] and "empty hole" in lines[0]


def test_the_grid_shows_the_worst_and_the_best_pairs_by_psnr_per_pattern(
    image_dir: Path, bank_dir: Path, tmp_path: Path
) -> None:
    from inpnet.evaluate.plots import grid_tile_origin

    out = tmp_path / "o"
    result = evaluate(resolve_method("telea"), image_dir, bank_dir, out_dir=out, cfg=_cfg(), save_outputs=True)
    with open(out / "per_image.csv") as f:
        rows = [r for r in csv.DictReader(f) if not r["excluded"]]
    shown = result.report["grid"]
    assert json.loads((out / "report.json").read_text())["grid"] == shown
    for pattern in ("center", "random"):  # 6 pairs each: the 2 lowest PSNR, then the 2 highest
        ranked = sorted((float(r["psnr"]), r["image"], r["ratio"]) for r in rows if r["pattern"] == pattern)
        worst = [(e["psnr"], e["image"], e["ratio"]) for e in shown if e["pattern"] == pattern and e["rank"] == "worst"]
        best = [(e["psnr"], e["image"], e["ratio"]) for e in shown if e["pattern"] == pattern and e["rank"] == "best"]
        assert [round(p, 4) for p, *_ in worst] == [round(p, 4) for p, *_ in ranked[:2]]
        assert [round(p, 4) for p, *_ in best] == [round(p, 4) for p, *_ in ranked[::-1][:2]]
        assert worst[0][0] < best[0][0]
    assert [(e["pattern"], e["rank"]) for e in shown[::2]] == [
        ("center", "worst"),
        ("center", "best"),
        ("random", "worst"),
        ("random", "best"),
    ]
    # the output tile of each shown pair is that pair's scored composite
    grid = np.asarray(Image.open(out / "grid.png"))
    for i, e in enumerate(shown):
        x, y = grid_tile_origin(i // 2, i % 2, 1, SIZE)
        saved = np.asarray(Image.open(out / "outputs" / e["pattern"] / e["ratio"] / f"{e['image']}.png"))
        assert np.array_equal(grid[y : y + SIZE, x : x + SIZE], saved), e


def test_a_pattern_with_few_pairs_shows_each_once(image_dir: Path, tmp_path: Path) -> None:
    from inpnet.masks import write_bank

    bank = tmp_path / "bank"
    write_bank(bank, size=SIZE, patterns=["center"], ratios=[0.3], per_cell=1, seed=0)
    result = evaluate(resolve_method("flat"), image_dir, bank, out_dir=tmp_path / "o", cfg=_cfg())
    shown = [(e["rank"], e["image"]) for e in result.report["grid"]]
    assert sorted(image for _, image in shown) == ["img0", "img1", "img2"]  # 3 pairs: 2 worst, 1 best
    assert [rank for rank, _ in shown] == ["worst", "worst", "best"]
