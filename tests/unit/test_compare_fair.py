"""The compare report's fairness sections: several training seeds per variant (mean, spread,
per-seed differences), the known pixels each method cannot see, size and training compute,
which generator made the masks, and an external mask folder as its own pattern."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inpnet.errors import DataError
from inpnet.evaluate.report import aggregate, compare_reports, load_reports, visibility, write_report
from inpnet.evaluate.significance import mean_pair_scores

IMAGES = [f"im{k}" for k in range(6)]


def _rows(offset: float, noise: float = 0.0, seed: int = 0, hidden: float = 0.0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "image": image,
            "pattern": pattern,
            "ratio": ratio,
            "achieved_ratio": float(ratio),
            "mask": f"{pattern}/{ratio}/0000.png",
            "psnr": base + k + offset + noise * float(rng.standard_normal()),
            "ssim": 0.5,
            "hidden_known": hidden * float(ratio) * 2,
        }
        for pattern in ("free_form", "center")
        for ratio, base in (("0.10", 30.0), ("0.50", 20.0))
        for k, image in enumerate(IMAGES)
    ]


def _write(
    folder: Path,
    name: str,
    offset: float,
    *,
    kind: str = "model",
    seed: int | None = None,
    noise: float = 0.0,
    patch: int | None = None,
    masks_sha: str = "abc",
) -> Path:
    rows = _rows(offset, noise, seed or 0, hidden=0.2 if patch else 0.0)
    settings: dict[str, Any] = {"kind": kind}
    if kind == "model":
        settings.update(
            train_seed=seed,
            cost={"params": 2_500_000, "disc_params": 0, "flops_per_image": 3.0e9, "image_size": 32, "counted": "c"},
            training={"steps": 200, "world_size": 1, "global_batch": 16, "images": 3200},
            train_masks={
                "generator": "inpnet.masks.MaskMixture",
                "patterns": {"center": 0.5, "free_form": 0.5},
                "options": {"center": {"jitter": 0.2}, "free_form": {"preset": "mixed"}},
                "ratio": [0.0, 0.75],
                "warmup_steps": 50,
                "dynamic": True,
                "rng": "numpy default_rng([train.seed, rank])",
                "seed": seed,
            },
        )
    report = {
        "method": name,
        "method_settings": settings,
        "pairs": len(rows),
        "images": {"source": "imgs", "kind": "folder", "count": len(IMAGES), "size": 32},
        "masks": {
            "source": "bank",
            "kind": "bank",
            "pairing": "bank",
            "manifest_sha256": masks_sha,
            "generators": {
                "free_form": {
                    "generator": "inpnet.masks.patterns.make_mask('free_form')",
                    "options": {"preset": "mixed"},
                    "rng": "numpy default_rng([seed, crc32(pattern), round(ratio * 10000), index])",
                    "seed": 0,
                }
            },
        },
        "visibility": visibility(rows, patch),
        "fid": {"available": False, "reason": "n/a"},
        "skipped": [],
    }
    write_report(folder, metrics=aggregate(rows), report=report, rows=rows)
    return folder


def test_mean_pair_scores_over_runs() -> None:
    a = {("i", "p", "0.10", "m"): 1.0, ("j", "p", "0.10", "m"): 3.0}
    b = {("i", "p", "0.10", "m"): 2.0}
    assert mean_pair_scores([a, b]) == {("i", "p", "0.10", "m"): 1.5}  # only the pairs every run scored
    assert mean_pair_scores([a]) == a
    with pytest.raises(ValueError, match="at least one"):
        mean_pair_scores([])


def test_compare_groups_the_seeds_of_a_variant_and_reports_their_spread(tmp_path: Path) -> None:
    _write(tmp_path / "baselines" / "telea", "telea", 0.0, kind="baseline")
    offsets = {0: 0.6, 1: 0.4, 2: 0.8}  # the seed runs' mean advantage over telea
    runs = [
        _write(tmp_path / f"seed{s}" / "inpnet_s", "inpnet_s", off, seed=s, noise=0.05) for s, off in offsets.items()
    ]
    _write(tmp_path / "mae" / "mae_s", "mae_s", -0.3, seed=0, patch=16)
    summary = compare_reports([tmp_path / "baselines", *runs, tmp_path / "mae" / "mae_s"], tmp_path / "cmp")
    assert set(summary["methods"]) == {"telea", "inpnet_s", "mae_s"}  # three folders, one method
    spread = summary["seeds"]["inpnet_s"]
    assert spread["seeds"] == [0, 1, 2] and len(spread["folders"]) == 3
    per_run = [json.loads((r / "metrics.json").read_text())["overall"]["psnr"] for r in runs]
    overall = spread["overall"]["psnr"]
    assert overall["n"] == 3 and overall["mean"] == pytest.approx(np.mean(per_run), abs=1e-5)
    assert overall["std"] == pytest.approx(np.std(per_run, ddof=1), abs=1e-5)
    assert (overall["min"], overall["max"]) == pytest.approx((min(per_run), max(per_run)), abs=1e-6)
    assert summary["methods"]["inpnet_s"]["overall"]["psnr"] == pytest.approx(np.mean(per_run), abs=1e-5)
    assert spread["buckets"]["center"]["0.50"]["psnr"]["n"] == 3
    # the paired difference uses each pair's mean over the seeds: +0.6 dB on average
    diff = next(
        d
        for d in summary["differences"]
        if (d["a"], d["b"], d["pattern"], d["ratio"]) == ("inpnet_s", "telea", "center", None)
    )
    assert diff["mean"] == pytest.approx(0.6, abs=0.05) and diff["verdict"] == "ahead"
    per_seed = [d for d in summary["seed_differences"] if d["b"] == "telea" and d["pattern"] == "center"]
    assert sorted(d["seed"] for d in per_seed) == [0, 1, 2] and all(d["verdict"] == "ahead" for d in per_seed)
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "## Spread over training seeds" in table and "| inpnet_s | 0, 1, 2 |" in table
    assert "## Paired differences per training seed" in table and "ahead in 3/3" in table
    assert "with train.seeds 0, 1, 2 (one per run)" in table  # the training masks of each seed run's own stream
    md = (tmp_path / "cmp" / "summary.md").read_text()
    assert "Over training seeds." in md and "ahead in 3/3" in md
    assert summary["reports"]["inpnet_s"] == [str(r) for r in runs]


def test_seed_runs_on_different_masks_are_refused_and_reevaluations_stay_apart(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", "inpnet_s", 0.0, seed=0)
    b = _write(tmp_path / "b", "inpnet_s", 0.0, seed=1, masks_sha="other")
    with pytest.raises(DataError, match=r"seed runs of inpnet_s were scored on different data"):
        load_reports([a, b])
    longer = _write(tmp_path / "longer", "inpnet_s", 0.0, seed=2)
    report = json.loads((longer / "report.json").read_text())
    report["method_settings"]["training"]["steps"] = 400
    (longer / "report.json").write_text(json.dumps(report))
    with pytest.raises(DataError, match=r"differ in more than train.seed"):
        load_reports([a, longer])
    c = _write(tmp_path / "c", "inpnet_s", 0.1, seed=0)  # the same seed twice: two evaluations, not seeds
    assert [e.name for e in load_reports([a, c])] == ["inpnet_s (a)", "inpnet_s (c)"]


def test_compare_shows_the_known_pixels_each_method_cannot_see_and_the_cost(tmp_path: Path) -> None:
    _write(tmp_path / "baselines" / "telea", "telea", 0.0, kind="baseline")
    _write(tmp_path / "inpnet_s", "inpnet_s", 0.5, seed=0)
    _write(tmp_path / "mae_s", "mae_s", -0.3, seed=0, patch=16)
    summary = compare_reports([tmp_path / "baselines", tmp_path / "inpnet_s", tmp_path / "mae_s"], tmp_path / "cmp")
    vis = summary["visibility"]
    assert vis["mae_s"]["input_view"] == "patches" and vis["mae_s"]["patterns"]["center"]["hidden_known"] > 0
    assert vis["inpnet_s"]["overall"]["hidden_known"] == 0.0 and vis["telea"]["overall"]["hidden_known"] == 0.0
    cost = summary["cost"]["inpnet_s"]
    assert cost["params"] == 2_500_000 and cost["training"]["images"] == 3200
    table = (tmp_path / "cmp" / "table.md").read_text()
    section = table.split("## Known pixels each method cannot see (%)")[1].split("## ")[0]
    assert (
        "| **mae_s** | patches of 16 px |" in section and "| telea (reference) | every known pixel | 0.0 |" in section
    )
    assert "By pattern and hole ratio, the methods that see patches:" in section
    assert "| center | **mae_s** | 4.0 | 20.0 |" in section  # 0.2 * 2 * ratio, in percent
    cost_rows = table.split("## Size and training compute")[1]
    assert "| inpnet_s | 2.50 | none | 3.00 | 200 | 3200 | 9.6 |" in cost_rows  # 3 GFLOPs x 3200 images
    assert "- Evaluation masks: `free_form` inpnet.masks.patterns.make_mask('free_form') (preset mixed)" in table
    assert "- Training masks (inpnet_s, mae_s): inpnet.masks.MaskMixture of center 50%, free_form 50%" in table
    assert "drawn from numpy default_rng([train.seed, rank]) with train.seed 0" in table
    md = (tmp_path / "cmp" / "summary.md").read_text()
    assert "Known pixels each model cannot see (%)" in md and "| mae_s | patches of 16 px |" in md
    assert "telea (reference) | every known pixel" not in md  # the summary lists the learned models
    assert "Size and training compute:" in md
    masks = summary["masks"]
    assert masks["training"]["mae_s"]["rng"] == "numpy default_rng([train.seed, rank])"
    assert masks["evaluation"]["telea"]["free_form"]["seed"] == 0


def test_an_external_mask_folder_is_its_own_pattern_in_the_compare_report(tmp_path: Path) -> None:
    """masks.external_dir -> the bank's 'external' cells -> every method's report -> compare."""
    from PIL import Image

    from inpnet.config import EvalConfig, MasksConfig, PromotionGates
    from inpnet.stages.compare import compare
    from inpnet.stages.evaluate import evaluate_method
    from inpnet.stages.masks import build_mask_bank

    ext = tmp_path / "irregular"
    ext.mkdir()
    rng = np.random.default_rng(0)
    for i, frac in enumerate([0.1, 0.12, 0.3, 0.32]):  # NVIDIA-style files: white = hole
        arr = np.zeros((64, 64), np.uint8)
        arr[: int(round(frac * 64)), :] = 255
        Image.fromarray(np.roll(arr, int(rng.integers(64)), axis=1)).save(ext / f"{i:05d}.png")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    cfg = MasksConfig(
        out_dir=str(tmp_path / "bank"),
        size=32,
        patterns=("center",),
        ratios=(0.1, 0.3),
        per_cell=2,
        external_dir=str(ext),
    )
    build_mask_bank(cfg)
    ev = EvalConfig(batch_size=4, grid_images=1, workers=1)
    for name in ("flat", "harmonic"):
        evaluate_method(ev, name, images, tmp_path / "bank", tmp_path / "reports" / name)
    summary = compare([tmp_path / "reports"], tmp_path / "cmp", PromotionGates())
    assert set(summary["methods"]["flat"]["patterns"]) == {"center", "external"}
    assert set(summary["methods"]["flat"]["buckets"]["external"]) == {"0.10", "0.30"}
    ext_gen = summary["masks"]["evaluation"]["flat"]["external"]
    assert ext_gen["generator"] == "mask files" and ext_gen["source"] == str(ext)
    md = (tmp_path / "cmp" / "summary.md").read_text()
    assert "PSNR (dB) by hole ratio, pattern `external`:" in md
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert f"`external` mask files `{ext}`" in table


def test_the_compare_cli_takes_several_seed_runs_of_a_variant(tmp_path: Path, repo_root: Path) -> None:
    from inpnet.cli import main

    runs = [_write(tmp_path / f"s{s}" / "mae_s", "mae_s", 0.1 * s, seed=s, patch=16) for s in range(2)]
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), "--out", str(out), "--params", str(repo_root / "params.yaml")]) == 0
    data = json.loads((out / "compare.json").read_text())
    assert list(data["methods"]) == ["mae_s"] and data["seeds"]["mae_s"]["overall"]["psnr"]["n"] == 2
