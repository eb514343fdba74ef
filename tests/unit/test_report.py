"""Report aggregation, tables, plots and the comparison across methods."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from inpnet.errors import DataError
from inpnet.evaluate.report import aggregate, compare_reports, load_reports, render_table, write_report


def _rows(offset: float = 0.0) -> list[dict]:
    rows = []
    for pattern in ("center", "random"):
        for ratio, base in (("0.10", 30.0), ("0.50", 20.0)):
            rows.extend(
                {
                    "image": f"im{k}",
                    "pattern": pattern,
                    "ratio": ratio,
                    "achieved_ratio": float(ratio),
                    "mask": f"{pattern}/{ratio}/000{k}.png",
                    "psnr": base + k + offset,
                    "ssim": 0.5 + 0.1 * k,
                }
                for k in range(2)
            )
    return rows


def _numbers_only(node) -> bool:
    if isinstance(node, dict):
        return all(_numbers_only(v) for v in node.values())
    return node is None or (isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node))


def test_aggregate_means_counts_and_layout() -> None:
    m = aggregate(_rows(), {"overall": None, "buckets": {("center", "0.10"): {"fid": 1.5, "kid": 0.01}}})
    assert m["overall"] == {"psnr": 25.5, "ssim": 0.55, "fid": None, "n": 8, "excluded": 0}
    assert m["patterns"]["center"] == {"psnr": 25.5, "ssim": 0.55, "n": 4}
    assert m["buckets"]["random"]["0.50"] == {"psnr": 20.5, "ssim": 0.55, "n": 2, "fid": None, "kid": None}
    assert m["buckets"]["center"]["0.10"]["fid"] == 1.5
    assert _numbers_only(m)


def test_excluded_rows_and_exact_matches_stay_out_of_every_mean() -> None:
    rows = [
        *_rows(),
        {
            "pattern": "center",
            "ratio": "0.10",
            "psnr": math.inf,
            "ssim": 1.0,
        },  # exact match: no number can stand for it
        {"pattern": "center", "ratio": "0.00", "psnr": None, "ssim": None, "excluded": "empty hole: ..."},
        {"pattern": "edges", "ratio": "0.50", "psnr": None, "ssim": None, "excluded": "full hole: ..."},
    ]
    m = aggregate(rows)
    assert m == {**aggregate(_rows()), "overall": {**aggregate(_rows())["overall"], "excluded": 3}}
    assert "0.00" not in m["buckets"]["center"] and "edges" not in m["patterns"] and "edges" not in m["buckets"]
    with pytest.raises(DataError, match="all 1 are excluded"):
        aggregate(rows[-1:])
    with pytest.raises(DataError, match=r"im0 .*scores \{'psnr': nan\} are not numbers"):
        aggregate([{**_rows()[0], "psnr": math.nan}])  # a NaN output is an error, never a quiet exclusion


def _write(folder: Path, name: str, offset: float, kind: str = "model", precision: str = "fp32") -> Path:
    rows = _rows(offset)
    settings = {"kind": kind} if kind == "baseline" else {"kind": kind, "trained_precision": precision}
    report = {
        "method": name,
        "method_settings": settings,
        "pairs": len(rows),
        "images": {"source": "imgs", "kind": "folder", "count": 2, "size": 32},
        "masks": {"source": "bank", "kind": "bank", "pairing": "bank"},
        "fid": {"available": False, "reason": "evaluate.fid_weights is not set"},
        "skipped": [{"path": "imgs/broken.jpg", "reason": "cannot read image"}],
    }
    write_report(folder, metrics=aggregate(rows), report=report, rows=rows)
    return folder


@pytest.mark.slow
def test_write_report_files_and_table(tmp_path: Path) -> None:
    ref = _write(tmp_path / "baselines" / "telea", "telea", -5.0, kind="baseline")
    out = tmp_path / "model"
    rows = _rows(1.0)
    write_report(
        out,
        metrics=aggregate(rows),
        report={"method": "inpnet_s", "fid": {"available": False, "reason": "no weights"}, "skipped": []},
        rows=rows,
        references=load_reports([tmp_path / "baselines"]),
    )
    for name in (
        "metrics.json",
        "report.json",
        "per_image.csv",
        "table.md",
        "plots/psnr_by_ratio.png",
        "plots/ssim_by_ratio.png",
    ):
        assert (out / name).is_file(), name
    assert _numbers_only(json.loads((out / "metrics.json").read_text()))
    csv_lines = (out / "per_image.csv").read_text().splitlines()
    assert csv_lines[0] == "image,pattern,ratio,achieved_ratio,mask,psnr,ssim,excluded" and len(csv_lines) == 9
    table = (out / "table.md").read_text()
    assert "| **inpnet_s** | **26.50** |" in table  # the best PSNR is bold
    assert "| telea (reference) | 20.50 |" in table
    assert "FID/KID unavailable (inpnet_s): no weights" in table
    assert "- Data: 2 images (folder `imgs`, 32 px)" in table  # said once: both saw the same data
    assert "## PSNR (dB) by pattern and hole ratio" in table and "## FID" not in table
    assert ref.is_dir()


@pytest.mark.slow
def test_compare_expands_folders_marks_baselines_and_dedups(tmp_path: Path) -> None:
    _write(tmp_path / "baselines" / "telea", "telea", -5.0, kind="baseline")
    _write(tmp_path / "baselines" / "biharmonic", "biharmonic", -4.0, kind="baseline")
    _write(tmp_path / "a", "inpnet_s", 1.0)
    _write(tmp_path / "b", "inpnet_s", 2.0)
    summary = compare_reports([tmp_path / "baselines", tmp_path / "a", tmp_path / "b"], tmp_path / "cmp")
    assert set(summary["methods"]) == {"telea", "biharmonic", "inpnet_s (a)", "inpnet_s (b)"}
    assert summary["baselines"] == ["biharmonic", "telea"]
    assert summary["best"]["psnr"] == "inpnet_s (b)"
    for name in ("table.md", "compare.json", "psnr_by_ratio.png", "ssim_by_ratio.png"):
        assert (tmp_path / "cmp" / name).is_file(), name
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "biharmonic (reference)" in table and "**inpnet_s (b)**" in table
    assert table.count("imgs/broken.jpg") == 2  # skipped files of the compared models, not of baselines


def test_load_reports_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no metrics.json"):
        load_reports([tmp_path])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "metrics.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_reports([tmp_path / "x"])


def test_render_table_shows_fid_columns_when_present() -> None:
    from inpnet.evaluate.report import ReportEntry

    m = aggregate(_rows(), {"overall": 12.0, "buckets": {("center", "0.10"): {"fid": 3.0, "kid": 0.002}}})
    table = render_table([ReportEntry("x", m, {"fid": {"available": True}})], title="t")
    assert "| **x** | 25.50 | 0.5500 | 12.00 | 8 |" in table
    assert "## FID by pattern and hole ratio" in table and "## KID by pattern and hole ratio" in table


def test_compare_warns_about_models_below_a_flat_fill_or_far_below_the_reference(tmp_path: Path) -> None:
    _write(tmp_path / "baselines" / "flat", "flat", -8.0, kind="baseline")
    _write(tmp_path / "baselines" / "telea", "telea", 0.0, kind="baseline")
    _write(tmp_path / "broken", "inpnet_s", -9.0)  # a one-colour fill: below flat, far below telea
    _write(tmp_path / "close", "mae_s", -0.5, precision="bf16")  # within 1 dB of telea: no warning
    _write(tmp_path / "behind", "cmgan_s", -3.0)
    summary = compare_reports(
        [tmp_path / "baselines", tmp_path / "broken", tmp_path / "close", tmp_path / "behind"],
        tmp_path / "cmp",
        reference="telea",
        max_gap_db=1.0,
    )
    warnings = summary["warnings"]
    assert any(
        w.startswith("WARNING: inpnet_s is below the flat mean-colour fill in 2 pattern(s)")
        and "has not learned to inpaint" in w
        for w in warnings
    ), warnings
    assert any(w.startswith("WARNING: inpnet_s is more than 1 dB below telea") for w in warnings), warnings
    assert any(
        w.startswith("WARNING: cmgan_s is more than 1 dB below telea") and "would not be promoted" in w
        for w in warnings
    ), warnings
    assert not any("mae_s" in w for w in warnings) and not any("cmgan_s is below the flat" in w for w in warnings)
    table = (tmp_path / "cmp" / "table.md").read_text()
    head = table.split("## Overall")[0]
    assert "## Warnings" in head and "**WARNING: inpnet_s is below the flat" in head  # above every table
    summary_md = (tmp_path / "cmp" / "summary.md").read_text()
    assert summary_md.startswith("Machine: ") and "| inpnet_s |" in summary_md and "WARNING: inpnet_s" in summary_md
    assert summary_md.splitlines()[0].endswith("; trained in bf16, fp32.")  # each learned method's precision
    quiet = compare_reports([tmp_path / "baselines", tmp_path / "close"], tmp_path / "cmp2")
    assert quiet["warnings"] == [] and "## Warnings" not in (tmp_path / "cmp2" / "table.md").read_text()


def test_paired_bootstrap_interval_and_verdicts() -> None:
    import numpy as np

    from inpnet.evaluate.significance import Difference, paired_bootstrap

    rng = np.random.default_rng(0)
    d = 0.3 + 0.2 * rng.standard_normal(36)
    mean, low, high = paired_bootstrap(d)
    assert mean == pytest.approx(d.mean()) and low < mean < high
    assert high - low == pytest.approx(2 * 1.96 * d.std(ddof=1) / 6, rel=0.2)  # about the normal interval
    assert paired_bootstrap(d) == (mean, low, high)  # seeded
    assert Difference("a", "b", "psnr", "p", None, mean, low, high, 36).verdict == "ahead"
    assert Difference("a", "b", "psnr", "p", None, -0.1, -0.2, 0.05, 36).verdict == "tie"
    assert Difference("a", "b", "psnr", "p", None, -0.1, -0.2, -0.01, 36).verdict == "behind"
    assert Difference("a", "b", "psnr", "p", None, 0.002, 0.001, 0.003, 36).verdict == "tie"  # prints as +0.00
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([1.0, float("inf")])


def test_compare_reports_paired_differences_on_shared_pairs(tmp_path: Path) -> None:
    _write(tmp_path / "baselines" / "telea", "telea", 0.0, kind="baseline")
    _write(tmp_path / "a", "inpnet_s", 0.5)  # +0.5 dB on every pair: ahead with a zero-width interval
    _write(tmp_path / "b", "mae_s", -0.02)
    summary = compare_reports([tmp_path / "baselines", tmp_path / "a", tmp_path / "b"], tmp_path / "cmp")
    diffs = {(d["a"], d["b"], d["pattern"], d["ratio"]): d for d in summary["differences"]}
    inp = diffs["inpnet_s", "telea", "center", None]
    assert inp["mean"] == pytest.approx(0.5) and inp["verdict"] == "ahead" and inp["n"] > 0
    assert diffs["mae_s", "telea", "center", None]["verdict"] == "behind"
    assert ("inpnet_s", "mae_s", "center", "0.10") in diffs and ("telea", "inpnet_s", "center", None) not in diffs
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "## Paired differences in PSNR" in table and "| inpnet_s - telea | +0.50 [+0.50, +0.50] **ahead**" in table
