"""``dvc repro`` end to end in a temporary copy of the repository on the tiny profile, and
DVC's bookkeeping: a change to one variant's params re-runs only that variant's stages."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.pipeline import _git, clone_worktree, pipeline_env, run_dvc, shared_prefect_server, write_params

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a loaded 2-core machine needs minutes

STAGE_RUN = re.compile(r"Running stage '([^']+)'")
UP_TO_DATE = {"remote": ["always changed"]}  # stage remote asks the data source on every run


@pytest.fixture(scope="module")
def prefect_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return shared_prefect_server(request.config, tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> tuple[Path, dict[str, str], set[str]]:
    """A clone on the tiny profile after one full ``dvc repro``: (repo, env, stages that ran)."""
    repo = clone_worktree(tmp_path_factory.mktemp("dvc") / "repo")
    env = pipeline_env(prefect_api, repo.parent)
    proc = run_dvc(["repro"], repo, env, timeout=900)
    _git(["add", "dvc.lock"], repo)  # a baseline commit for metrics/plots diff
    _git(["commit", "-q", "-m", "repro"], repo)
    return repo, env, set(STAGE_RUN.findall(proc.stdout))


def _params(repo: Path) -> dict[str, Any]:
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_repro_runs_every_stage(tiny_repo: tuple[Path, dict[str, str], set[str]]) -> None:
    repo, _, ran = tiny_repo
    variants = _params(repo)["pipeline"]["variants"]
    expected = {"remote", "data", "shard@train", "shard@val", "masks", "baselines", "compare", "register"}
    expected |= {f"{stage}@{v}" for stage in ("train", "evaluate") for v in variants}
    assert ran == expected


def test_repro_writes_reports_and_registers_a_champion(tiny_repo: tuple[Path, dict[str, str], set[str]]) -> None:
    repo, _, _ = tiny_repo
    params = _params(repo)
    patterns = set(params["masks"]["patterns"])
    for variant in params["pipeline"]["variants"]:
        assert (repo / "models" / variant / "model.safetensors").is_file()
        metrics = json.loads((repo / "reports" / "variants" / variant / "metrics.json").read_text())
        assert set(metrics["patterns"]) == patterns
        for numbers in metrics["patterns"].values():
            assert numbers["n"] > 0 and numbers["psnr"] > 0 and 0 < numbers["ssim"] <= 1
    table = (repo / "reports" / "compare" / "table.md").read_text()
    for name in [*params["pipeline"]["variants"], *params["evaluate"]["baselines"]]:
        assert name in table
    assert (repo / "reports" / "compare" / "psnr_by_ratio.png").is_file()
    registry = json.loads((repo / "reports" / "registry.json").read_text())
    assert set(registry["registered"]) == set(params["pipeline"]["variants"])
    assert any(d["champion"] for d in registry["decisions"].values())


def test_metrics_show_reads_every_variant(tiny_repo: tuple[Path, dict[str, str], set[str]]) -> None:
    repo, env, _ = tiny_repo
    shown = json.loads(run_dvc(["metrics", "show", "--json"], repo, env).stdout)
    files = {path for workspace in shown.values() for path in workspace.get("data", {})}
    for variant in _params(repo)["pipeline"]["variants"]:
        assert f"reports/variants/{variant}/metrics.json" in files


def test_changing_one_variant_reruns_only_its_stages(tiny_repo: tuple[Path, dict[str, str], set[str]]) -> None:
    repo, env, _ = tiny_repo
    assert json.loads(run_dvc(["status", "--json"], repo, env).stdout) == UP_TO_DATE
    params = _params(repo)
    params["variants"]["mae_tiny"]["train"]["max_steps"] += 1
    write_params(repo / "params.yaml", params)
    changed = json.loads(run_dvc(["status", "--json"], repo, env).stdout)
    assert set(changed) == {"remote", "train@mae_tiny"}
    ran = set(STAGE_RUN.findall(run_dvc(["repro"], repo, env, timeout=600).stdout)) - {"remote"}
    # compare and register depend on every variant's outputs: they follow when mae's do
    assert (
        {"train@mae_tiny", "evaluate@mae_tiny"} <= ran <= {"train@mae_tiny", "evaluate@mae_tiny", "compare", "register"}
    )
    assert json.loads(run_dvc(["status", "--json"], repo, env).stdout) == UP_TO_DATE
    registry = json.loads((repo / "reports" / "registry.json").read_text())
    assert sorted(registry["reused"]) == ["cmgan_tiny", "inpnet_tiny"]  # only mae became a new version
    assert registry["registered"]["mae_tiny"]["version"] == "2"
    _assert_diffs_show_only_mae(repo, env)


def _assert_diffs_show_only_mae(repo: Path, env: dict[str, str]) -> None:
    """Metrics and plots of the last commit are read back from DVC's cache (reports/ is git-ignored)."""
    diff = json.loads(run_dvc(["metrics", "diff", "--json"], repo, env).stdout)
    assert "reports/variants/mae_tiny/metrics.json" in diff, diff
    assert not any("inpnet_tiny" in path or "cmgan_tiny" in path for path in diff), diff
    out = repo.parent / "plots-diff"
    run_dvc(["plots", "diff", "HEAD", "-o", str(out)], repo, env)
    assert (out / "index.html").is_file()
    assert len(list(out.rglob("*psnr_by_ratio.png"))) >= 2, sorted(out.rglob("*"))  # committed and workspace versions
