"""``bench/scale.py --quick`` at a tiny size: every figure the scale simulation promises is reported,
and the SIGKILL-and-restart it times keeps the finished shards and ends with the uninterrupted run's bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_scale_run_reports_every_figure(tmp_path: Path) -> None:
    figures_path = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "scale.py"),
            "--quick",
            "--size-gb",
            "0.03",
            "--members",
            "200",
            "--samples-per-shard",
            "4",  # ~50 shards: the kill lands mid-run
            "--workdir",
            str(tmp_path),
            "--json",
            str(figures_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    f = json.loads(figures_path.read_text())
    assert f["whole"]["tar_bytes"] >= 0.03e9 and f["members"]["whole"] >= 200
    assert 0 < f["members"]["prefix"] < f["members"]["whole"]
    assert f["prefix"]["tar_bytes"] < f["whole"]["tar_bytes"]
    assert f["jpeg"]["sides"] == [512, 1024] and 0 < f["jpeg"]["min_kb"] < f["jpeg"]["max_kb"]
    for size in ("prefix", "whole"):
        x = f[size]
        for key in ("cat_mb_s", "copy_mb_s", "shard_mb_s", "shard_over_cat", "shard_over_copy", "shard_mb_per_cpu_s"):
            assert x[key] > 0, (size, key, x)
        assert x["shard_over_cat"] == pytest.approx(x["shard_mb_s"] / x["cat_mb_s"])
        assert x["max_rss"] > 10e6 and x["tree_rss"] > 10e6, x  # a Python process holds more than 10 MB
    assert 0 < f["index"]["added_bytes_per_member"] <= f["index"]["added_peak_bytes_per_member"], f["index"]
    assert f["index"]["bytes_per_member"] < 600, f["index"]  # a Python object per member cost ~600 bytes
    r = f["resume"]
    assert r["samples"] == f["members"]["whole"]
    assert r["samples"] / 2 <= r["finished_at_kill"] < r["samples"], r  # killed at half, not after the end
    assert r["kept_samples"] == r["finished_at_kill"], r  # every shard finished before the kill was kept
    assert r["kept_samples"] + r["redone_samples"] == r["samples"]
    assert r["restart_wall_s"] > 0 and r["identical"] is True
    for label in (
        "cat > /dev/null (MB/s)",
        "sharder / cat",
        "peak RSS, largest process (MB)",
        "peak RSS, process tree (MB)",
        "peak RSS whole / prefix",
        "index in memory:",
        "resume: SIGKILL after",
        "output equals the uninterrupted run's",
        "median",
    ):
        assert label in proc.stdout, (label, proc.stdout)
    assert not list(tmp_path.glob("bench-scale-*")), "the work folder is removed without --keep"
