"""The pipeline flows under a Prefect test harness (own PREFECT_HOME and database), and the
entry points' handling of bad params."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.pipeline import deep_merge, pipeline_env, repo_toplevel, tiny_params, write_params

from inpnet.config import load_params

REPO = repo_toplevel()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temporary Prefect server for every flow test of this module (start-up is 15-60 s here)."""
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with temporary_settings(updates={PREFECT_HOME: str(home)}), prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny profile with every output under a temp dir (the flows take paths from params)."""
    root = tmp_path_factory.mktemp("flows")
    params = tiny_params(REPO)
    params = deep_merge(
        params,
        {
            "data": {"raw_dir": str(root / "raw"), "shards_dir": str(root / "shards")},
            "masks": {"out_dir": str(root / "masks")},
            "train": {"out_dir": str(root / "models")},
            "evaluate": {"out_dir": str(root / "reports")},
        },
    )
    path = root / "params.yaml"
    write_params(path, params)
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)  # includes the harness start-up, 15-60 s on a loaded machine
def test_data_flow_writes_the_sample(harness: None, params_file: Path) -> None:
    from pipelines.data import data_flow

    data = load_params(params_file).data
    paths = [Path(p) for p in data_flow(data)]
    names = sorted(p.name for p in paths)
    assert names == sorted([data.fetch.train.filename, data.fetch.val.filename, data.fetch.filelist.filename])
    assert all(p.parent == Path(data.raw_dir) and p.stat().st_size > 0 for p in paths)


@pytest.mark.slow
@pytest.mark.timeout(600)  # includes the harness start-up, 15-60 s on a loaded machine
def test_masks_flow_writes_the_bank(harness: None, params_file: Path) -> None:
    from inpnet.masks import load_bank
    from pipelines.masks import masks_flow

    masks = load_params(params_file).masks
    manifest = Path(masks_flow(masks))
    assert manifest == Path(masks.out_dir) / "manifest.json" and manifest.is_file()
    bank = load_bank(masks.out_dir)
    assert len(bank) == len(masks.patterns) * len(masks.ratios) * masks.per_cell
    assert {m.pattern for m in bank} == set(masks.patterns)


@pytest.mark.slow
@pytest.mark.timeout(600)  # includes the harness start-up, 15-60 s on a loaded machine
def test_baselines_then_compare_flows(harness: None, params_file: Path) -> None:
    """Shard val, evaluate the baselines, compare them: the stages that need no training."""
    from inpnet.stages.reports import report_dir
    from pipelines.compare import compare_flow
    from pipelines.data import data_flow
    from pipelines.evaluate import evaluate_flow
    from pipelines.masks import masks_flow
    from pipelines.shard import run_shard

    params = load_params(params_file)
    # the tiny profile has no trained variant here: compare the baselines alone
    params = params.model_copy(update={"pipeline": params.pipeline.model_copy(update={"variants": ()})})
    if not (Path(params.data.raw_dir) / params.data.fetch.val.filename).is_file():
        data_flow(params.data)
    if not (Path(params.masks.out_dir) / "manifest.json").is_file():
        masks_flow(params.masks)
    totals = run_shard(params_file, "val")
    assert totals
    outs = evaluate_flow(params, baselines=True)
    assert outs == [str(report_dir(params, "telea", baseline=True))]
    metrics = json.loads((Path(outs[0]) / "metrics.json").read_text())
    assert set(metrics["patterns"]) == set(params.masks.patterns)
    assert all(metrics["patterns"][p]["n"] > 0 for p in params.masks.patterns)
    summary = compare_flow(params)
    assert "telea" in summary["methods"]
    assert (Path(params.evaluate.out_dir) / "compare" / "table.md").is_file()


def _write_bad_params(tmp_path: Path) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["masks"]["sizee"] = 32
    bad = tmp_path / "bad.yaml"
    write_params(bad, params)
    return bad


@pytest.mark.slow
def test_bad_params_key_exits_2_with_its_dotted_path(tmp_path: Path) -> None:
    """The real entry point as DVC runs it: ``python -m pipelines.masks``."""
    env = pipeline_env(None, tmp_path)
    env["PYTHONPATH"] = str(REPO)
    bad = _write_bad_params(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.masks", "--params", str(bad)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "masks.sizee" in proc.stderr and "bad.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()  # failed before any work


def test_unknown_variant_exits_2_before_any_flow(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines import train
    from pipelines.common import run_entry

    assert (
        run_entry(train.main, train.build_parser(), ["--params", str(REPO / "params.yaml"), "--variant", "nope_s"]) == 2
    )
    err = capsys.readouterr().err
    assert "nope_s" in err and "inpnet_s" in err  # names the variants that exist


@pytest.mark.parametrize("module", ["data", "masks", "compare", "register"])
def test_entry_points_map_config_errors_to_exit_2(
    module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    from pipelines.common import base_parser, run_entry

    mod = importlib.import_module(f"pipelines.{module}")
    assert run_entry(mod.main, base_parser(module), ["--params", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err
    assert run_entry(mod.main, base_parser(module), ["--params", str(_write_bad_params(tmp_path))]) == 2
    assert "masks.sizee" in capsys.readouterr().err


def test_retrain_deployment_has_cron_and_one_run_at_a_time(tmp_path: Path) -> None:
    """The deployment object carries params' schedule and concurrency limit 1 (no server needed)."""
    from pipelines.retrain import DEPLOYMENT_NAME, make_deployment

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["schedule"] = {"cron": "5 1 * * 2", "timezone": "Europe/Paris"}
    write_params(tmp_path / "params.yaml", params)
    deployment = make_deployment(tmp_path, Path("params.yaml"))
    assert deployment.name == DEPLOYMENT_NAME
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "5 1 * * 2" and schedule.schedule.timezone == "Europe/Paris"
    assert deployment.concurrency_limit == 1
    assert deployment.parameters["repo"] == str(tmp_path.resolve())


def test_entry_points_do_not_override_the_users_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.common import prepare_environment

    monkeypatch.setenv("DO_NOT_TRACK", "0")
    monkeypatch.delenv("DVC_NO_ANALYTICS", raising=False)
    prepare_environment()
    assert os.environ["DO_NOT_TRACK"] == "0" and os.environ["DVC_NO_ANALYTICS"] == "1"


def test_importing_a_pipeline_module_leaves_the_environment_alone() -> None:
    code = (
        "import os; before = dict(os.environ); import pipelines.common, pipelines.train; "
        "changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}; "
        "print(sorted(changed)); raise SystemExit(1 if changed else 0)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "DVC_NO_ANALYTICS")}
    env = {k: v for k, v in env.items() if not k.startswith("PREFECT_SERVER_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _expanded_stages() -> dict[str, dict]:
    """dvc.yaml's stages with ``foreach`` expanded over its items (``${pipeline.variants}`` from params)."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = {}
    for name, stage in spec.items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        items = stage["foreach"]
        if isinstance(items, str):  # "${pipeline.variants}"
            node = params
            for part in items.strip("${}").split("."):
                node = node[part]
            items = node
        for item in items:
            stages[f"{name}@{item}"] = yaml.safe_load(yaml.safe_dump(stage["do"]).replace("${item}", str(item)))
    return stages


def test_dvc_stages_name_existing_code_and_params() -> None:
    """Every code dependency exists and every params key resolves, for every expanded stage."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in _expanded_stages().items():
        for dep in stage.get("deps", []):
            if dep.startswith(("pipelines/", "inpnet/")):
                assert (REPO / dep).exists(), f"{name}: dependency {dep} does not exist"
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{name}: params key {key} not in params.yaml"
                node = node[part]
        module = stage["cmd"].split()[2]
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), f"{name}: {stage['cmd']}"


@pytest.mark.slow
def test_a_training_stopped_by_sigterm_is_not_retried_but_a_crash_is(
    harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM means "stop" (the trainer saved a checkpoint and raised TrainingInterrupted):
    Prefect must not start the training again; a crash gets the task's one retry."""
    from inpnet.errors import TrainingInterrupted
    from pipelines import train

    calls: list[str] = []

    def stopped(_params: object, variant: str, **_kw: object) -> str:
        calls.append(variant)
        raise TrainingInterrupted(f"training of {variant} stopped by SIGTERM")

    def crashes(_params: object, variant: str, **_kw: object) -> str:
        calls.append(variant)
        raise RuntimeError("a crash")

    params = load_params(REPO / "params.yaml")
    monkeypatch.setattr(train, "train_variant", stopped)
    with pytest.raises(TrainingInterrupted):
        train.train_flow(params, "inpnet_s")
    assert calls == ["inpnet_s"]
    calls.clear()
    monkeypatch.setattr(train, "train_variant", crashes)
    with pytest.raises(RuntimeError, match="a crash"):
        train.train_flow(params, "inpnet_s")
    assert calls == ["inpnet_s", "inpnet_s"]
