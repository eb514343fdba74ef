"""`dvc plots diff` draws the compare stage's by-ratio data for two revisions on one axis,
with the plot definitions and the template of this repository's dvc.yaml and .dvc/plots."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inpnet.evaluate.report import BY_RATIO_FIELDS, aggregate, compare_reports, write_report

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _report(folder: Path, name: str, offset: float, kind: str = "model") -> Path:
    rows = [
        {
            "image": f"img{i}.png",
            "pattern": pattern,
            "ratio": ratio,
            "achieved_ratio": float(ratio),
            "mask": "m.png",
            "psnr": 20.0 + offset - 10 * float(ratio) + i,
            "ssim": 0.9 - float(ratio) / 2,
            "excluded": "",
        }
        for pattern in ("free_form", "center")
        for ratio in ("0.10", "0.40")
        for i in range(2)
    ]
    report = {"method": name, "method_settings": {"kind": kind}, "fid": {"available": False, "reason": "n/a"}}
    write_report(folder, metrics=aggregate(rows), report={**report, "skipped": []}, rows=rows)
    return folder


def _dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


def test_compare_writes_long_form_by_ratio_data(tmp_path: Path) -> None:
    _report(tmp_path / "baselines" / "telea", "telea", 0.0, kind="baseline")
    _report(tmp_path / "m", "inpnet_s", 1.0)
    compare_reports([tmp_path / "baselines", tmp_path / "m"], tmp_path / "cmp")
    lines = (tmp_path / "cmp" / "by_ratio.csv").read_text().splitlines()
    assert lines[0] == ",".join(BY_RATIO_FIELDS)
    assert len(lines) == 1 + 2 * 2 * 2  # methods x patterns x buckets
    assert "inpnet_s,0,free_form,0.4,17.5," in "\n".join(lines)
    assert any(line.startswith("telea,1,center,0.1,") for line in lines)


def test_dvc_plots_diff_overlays_two_revisions(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _dvc(repo, "init", "-q")
    (repo / ".dvc" / "plots").mkdir(exist_ok=True)
    shutil.copy(REPO / ".dvc" / "plots" / "by_method.json", repo / ".dvc" / "plots" / "by_method.json")
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]  # this repository's definitions
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    for rev, offset in (("one", 0.0), ("two", 3.0)):
        _report(tmp_path / rev / "baselines" / "telea", "telea", 0.0, kind="baseline")
        _report(tmp_path / rev / "m", "inpnet_s", offset)
        compare_reports([tmp_path / rev / "baselines", tmp_path / rev / "m"], repo / "reports" / "compare")
        _git(repo, "add", "-A", "-f")
        _git(repo, "commit", "-q", "-m", rev)
    out = json.loads(_dvc(repo, "plots", "diff", "HEAD~1", "HEAD", "--json"))["data"]
    assert set(out) >= {"psnr_by_ratio", "ssim_by_ratio"}, list(out)
    (psnr,) = out["psnr_by_ratio"]
    assert psnr["type"] == "vega" and set(psnr["revisions"]) == {"HEAD~1", "HEAD"}
    data = psnr["content"]["data"]["values"]
    points = {(d["rev"], d["method"], d["pattern"], float(d["ratio"])): float(d["psnr"]) for d in data}
    assert points["HEAD", "inpnet_s", "free_form", 0.4] - points[
        "HEAD~1", "inpnet_s", "free_form", 0.4
    ] == pytest.approx(3.0)
    assert ("HEAD~1", "telea", "center", 0.1) in points
    spec = psnr["content"]
    assert spec["facet"]["column"]["field"] == "pattern"
    assert spec["spec"]["encoding"]["color"]["field"] == "method"
    assert spec["spec"]["encoding"]["x"]["field"] == "ratio" and spec["spec"]["encoding"]["y"]["field"] == "psnr"
