"""Registry: register, aliases, load by URI, promotion gates both ways, pull, a real mlflow server.

MLflow tests share the session's temporary sqlite store (conftest) and use a model name of
their own, so the schema migration (seconds) is paid once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.registry import (
    REPO_ROOT,
    decode_b64_png,
    ensure_build_model,
    image_and_mask,
    make_checkpoint,
    png_b64,
    tiny_variant,
    write_metrics,
)
from helpers.registry import mlflow_server as real_mlflow_server

from inpnet.config import PromotionGates
from inpnet.errors import DataError, RegistryError

PATTERNS = {"center": 20.0, "edges": 22.0}
REL = PromotionGates(reference=None)  # the relative gates alone


# ------------------------------------------------------------------- gates (fast)


def _tags(
    psnr: float, patterns: dict[str, float], bank: str | None = "b1", evaluated: str | None = "w1"
) -> dict[str, str | float]:
    """A version's record as promotion reads it: its tags and its model's ``eval/...`` metrics."""
    tags: dict[str, str | float] = {
        "eval/psnr": float(psnr),
        **{f"eval/{p}/psnr": float(v) for p, v in patterns.items()},
        **{f"eval/{p}/0.40/psnr": 99.0 for p in patterns},  # ratio buckets are not patterns
        "weights_sha256": "w1",
    }
    tags = {**tags, "evaluation.weights_sha256": evaluated} if evaluated else tags
    return {**tags, "mask_bank_sha256": bank} if bank else tags


@pytest.mark.parametrize(
    ("challenger", "champion", "gates", "passes", "reason"),
    [
        (_tags(21, PATTERNS), None, REL, True, "no champion yet"),
        (_tags(21, PATTERNS), _tags(20, PATTERNS), REL, True, "pass"),
        (_tags(20, PATTERNS), _tags(20, PATTERNS), REL, False, "needs > 0"),
        (
            _tags(20.2, PATTERNS),
            _tags(20, PATTERNS),
            PromotionGates(min_improvement=0.5, reference=None),
            False,
            ">= 0.5",
        ),
        (_tags(21, {"center": 19.0, "edges": 25}), _tags(20, PATTERNS), REL, False, "pattern center"),
        (_tags(21, {"center": 19.6, "edges": 25}), _tags(20, PATTERNS), REL, True, "pass"),
        (_tags(21, {"edges": 25}), _tags(20, PATTERNS), REL, False, "pattern center: challenger has no PSNR"),
        (_tags(21, PATTERNS, bank="b2"), _tags(20, PATTERNS), REL, False, "mask banks differ"),
        ({"variant": "x"}, None, REL, False, "no recorded psnr"),
        # metrics registered without an evaluation of these weights (or of others) never promote
        (_tags(30, PATTERNS, evaluated=None), None, REL, False, "no evaluation of its own weights"),
        (_tags(30, PATTERNS, evaluated="w2"), _tags(20, PATTERNS), REL, False, "evaluated weights w2"),
    ],
)
def test_judge_gates(challenger, champion, gates, passes, reason) -> None:
    from inpnet.registry.promote import judge

    ok, reasons = judge(challenger, champion, gates)
    assert ok is passes
    assert any(reason in r for r in reasons), reasons


def _reference(patterns: dict[str, float], bank: str | None = "b1"):
    from inpnet.registry.promote import Reference

    return Reference("telea", _tags(25.0, patterns, bank=None), bank)


@pytest.mark.parametrize(
    ("challenger", "champion", "reference", "passes", "reason"),
    [
        # a first version that trails the reference by more than the gap stays challenger
        (
            _tags(13.2, {"center": 13.0, "edges": 13.5}),
            None,
            _reference(PATTERNS),
            False,
            "pattern center: PSNR 13.000 dB trails telea 20.000 by 7.000 dB",
        ),
        (_tags(21, {"center": 19.5, "edges": 21.5}), None, _reference(PATTERNS), True, "within 1.0 dB of telea"),
        (_tags(21, {"center": 19.5, "edges": 20.9}), None, _reference(PATTERNS), False, "pattern edges"),
        # better than the champion does not excuse trailing the reference
        (
            _tags(21, {"center": 18.0, "edges": 24}),
            _tags(17, {"center": 17.5, "edges": 17.5}),
            _reference(PATTERNS),
            False,
            "trails telea",
        ),
        (_tags(21, PATTERNS), None, None, False, "no telea report"),
        (_tags(21, PATTERNS), None, _reference(PATTERNS, bank="b9"), False, "another or an unknown mask bank"),
        (_tags(21, {"edges": 22}), None, _reference(PATTERNS), False, "center: challenger has no PSNR"),
    ],
)
def test_absolute_gate_against_the_reference(challenger, champion, reference, passes, reason) -> None:
    from inpnet.registry.promote import judge

    ok, reasons = judge(challenger, champion, PromotionGates(reference="telea", max_gap_to_reference_db=1.0), reference)
    assert ok is passes
    assert any(reason in r for r in reasons), reasons


def _write_reference(folder: Path, patterns: dict[str, float], bank: Path) -> Path:
    """A baseline's evaluation folder as the evaluator writes it: metrics.json and report.json."""
    from inpnet.registry.tracking import file_sha256

    write_metrics(folder / "metrics.json", 22.0, patterns)
    (folder / "report.json").write_text(
        json.dumps(
            {
                "method": "telea",
                "method_settings": {"kind": "baseline"},
                "masks": {"source": str(bank), "kind": "bank", "manifest_sha256": file_sha256(bank / "manifest.json")},
            }
        )
    )
    return folder


def test_load_reference_reads_metrics_and_bank(tmp_path: Path) -> None:
    from inpnet.registry.promote import load_reference
    from inpnet.registry.tracking import file_sha256

    bank = tmp_path / "masks"
    bank.mkdir()
    (bank / "manifest.json").write_text("{}")
    _write_reference(tmp_path / "telea", PATTERNS, bank)
    ref = load_reference(tmp_path / "telea", "telea")
    assert ref is not None and ref.mask_bank_sha256 == file_sha256(bank / "manifest.json")
    assert ref.metrics["eval/center/psnr"] == 20.0
    assert load_reference(tmp_path / "none", "telea") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{")
    with pytest.raises(RegistryError, match="unreadable reference"):
        load_reference(tmp_path / "bad", "telea")


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A checkpoint, a mask bank manifest and a model name of its own in the session store."""
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    root = tmp_path_factory.mktemp("registry")
    bank = root / "bank"
    bank.mkdir()
    (bank / "manifest.json").write_text(json.dumps({"patterns": list(PATTERNS), "seed": 0}))
    return {
        "root": root,
        "uri": os.environ["MLFLOW_TRACKING_URI"],
        "name": f"inpnet-test-{uuid.uuid4().hex[:8]}",
        "ckpt": make_checkpoint(root / "ckpt"),
        "bank": bank,
    }


def _register(store: dict, tag: str, psnr: float, patterns: dict[str, float], **kw):
    from inpnet.registry.register import register

    metrics = write_metrics(
        store["root"] / tag / "metrics.json", psnr, patterns, checkpoint=store["ckpt"], bank=store["bank"]
    )
    return register(store["ckpt"], metrics, tracking_uri=store["uri"], name=store["name"], **kw)


def _alias(store: dict, alias: str) -> str:
    from inpnet.registry.store import client

    return str(client(store["uri"]).get_model_version_by_alias(store["name"], alias).version)


@pytest.fixture(scope="module")
def first(store: dict):
    return _register(store, "v1", 20.0, PATTERNS, tags={"purpose": "test"})


# ---------------------------------------------------------------------- mlflow tests


@pytest.mark.slow
def test_register_alias_load_and_predict(store: dict, first) -> None:
    import mlflow

    from inpnet.inpaint import load_inpainter
    from inpnet.registry.store import client
    from inpnet.registry.tracking import file_sha256

    assert _alias(store, "challenger") == first.version
    tags = client(store["uri"]).get_model_version(store["name"], first.version).tags
    assert tags["variant"] == "inpnet_tiny" and tags["family"] == "inpnet" and tags["purpose"] == "test"
    assert tags["mask_bank_sha256"] == file_sha256(store["bank"] / "manifest.json")
    from inpnet.registry.lineage import model_id_of

    mv = client(store["uri"]).get_model_version(store["name"], first.version)
    scores = {m.key: m.value for m in client(store["uri"]).get_logged_model(model_id_of(mv)).metrics}
    assert scores["eval/psnr"] == 20.0 and scores["eval/edges/psnr"] == 22.0
    assert not any(k.startswith("metrics.") for k in tags)  # scores are metrics, not tags
    assert tags["git_commit"]

    image, hole = image_and_mask(97, 131)
    inpainter, info = load_inpainter(f"models:/{store['name']}@challenger", tracking_uri=store["uri"])
    assert info["version"] == first.version and info["img_size"] == 32
    from inpnet.inpaint import inpaint_image

    assert np.array_equal(inpaint_image(inpainter, image, hole)[~hole], image[~hole])

    mlflow.set_tracking_uri(store["uri"])
    pyfunc = mlflow.pyfunc.load_model(f"models:/{store['name']}@challenger")
    mask = np.where(hole, 255, 0).astype(np.uint8)
    out = pyfunc.predict(pd.DataFrame({"image": [png_b64(image)], "mask": [png_b64(mask)]}))
    result = decode_b64_png(out["image"][0])
    assert result.shape == image.shape and np.array_equal(result[~hole], image[~hole])
    with pytest.raises(mlflow.exceptions.MlflowException, match="must match"):
        pyfunc.predict(pd.DataFrame({"image": [png_b64(image)], "mask": [png_b64(mask[:10, :10])]}))


@pytest.mark.slow
def test_promotion_both_ways_with_reasons(store: dict, first) -> None:
    from inpnet.registry.promote import promote
    from inpnet.registry.store import client

    gates = PromotionGates(max_pattern_psnr_drop=0.5, reference=None)
    c = client(store["uri"])
    d1 = promote(store["name"], tracking_uri=store["uri"], gates=gates)
    assert d1.promoted and _alias(store, "champion") == first.version
    assert promote(store["name"], tracking_uri=store["uri"], gates=gates).reasons == ["already champion"]

    better = _register(store, "v2", 21.0, {"center": 20.5, "edges": 22.5})
    d2 = promote(store["name"], tracking_uri=store["uri"], gates=gates)
    assert d2.promoted and d2.champion_before == first.version and _alias(store, "champion") == better.version
    assert c.get_model_version(store["name"], better.version).tags["promotion.decision"] == "promoted"
    assert c.get_model_version(store["name"], first.version).tags["promotion.superseded_by"] == better.version

    worse = _register(store, "v3", 22.0, {"center": 19.0, "edges": 25.0})  # better overall, one pattern drops
    for _ in range(2):  # re-running gives the same decision and changes nothing
        d3 = promote(store["name"], tracking_uri=store["uri"], gates=gates)
        assert not d3.promoted and _alias(store, "champion") == better.version
    tags = c.get_model_version(store["name"], worse.version).tags
    assert tags["promotion.decision"] == "rejected" and "pattern center" in tags["promotion.reasons"]
    assert tags["promotion.champion_before"] == better.version


@pytest.mark.slow
def test_pull_then_load_offline(store: dict, first, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from inpnet.inpaint import load_inpainter
    from inpnet.registry.pull import pull

    out = pull(f"models:/{store['name']}@challenger", tmp_path / "model", tracking_uri=store["uri"])
    meta = json.loads((out / "registry.json").read_text())
    assert meta["name"] == store["name"] and (out / "MLmodel").is_file() and (out / "code" / "inpnet").is_dir()

    # offline: the registry is unreachable, the folder alone must do
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    _inpainter, info = load_inpainter(out)
    assert info["variant"] == "inpnet_tiny" and info["name"] == store["name"]
    image, hole = image_and_mask(33, 40)
    out_df = mlflow.pyfunc.load_model(str(out)).predict(
        pd.DataFrame({"image": [png_b64(image)], "mask": [png_b64(np.where(hole, 255, 0).astype(np.uint8))]})
    )
    assert decode_b64_png(out_df["image"][0]).shape == image.shape
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])

    with pytest.raises(DataError, match="not empty"):
        pull(f"models:/{store['name']}@challenger", out, tracking_uri=store["uri"])
    with pytest.raises(RegistryError, match=r"no alias 'nope'.*challenger"):
        pull(f"models:/{store['name']}@nope", tmp_path / "a", tracking_uri=store["uri"])
    with pytest.raises(RegistryError, match="no registered model 'missing-model'"):
        load_inpainter("models:/missing-model@champion", tracking_uri=store["uri"])
    with pytest.raises(RegistryError, match="not a registry URI"):
        pull("models:/", tmp_path / "b", tracking_uri=store["uri"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folders left behind


@pytest.mark.slow
def test_cli_register_promote_pull(store: dict, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    from inpnet.cli import main
    from inpnet.registry.store import client

    name = f"{store['name']}-cli"
    metrics = write_metrics(tmp_path / "metrics.json", 20.0, PATTERNS, checkpoint=store["ckpt"], bank=store["bank"])
    common = ["--tracking-uri", store["uri"], "--params", str(REPO_ROOT / "params.yaml")]
    assert (
        main(["register", str(store["ckpt"]), "--metrics", str(metrics), "--name", name, "--tag", "k=v", *common]) == 0
    )
    far_ahead = _write_reference(tmp_path / "telea-far", {"center": 30.0, "edges": 30.0}, store["bank"])
    close = _write_reference(tmp_path / "telea", {"center": 20.5, "edges": 22.5}, store["bank"])
    assert main(["promote", "--name", name, "--reference", str(far_ahead), *common]) == 0
    with pytest.raises(MlflowException):  # the absolute gate kept it a challenger
        client(store["uri"]).get_model_version_by_alias(name, "champion")
    assert main(["promote", "--name", name, "--reference", str(close), *common]) == 0
    assert main(["pull", f"models:/{name}@champion", "--out", str(tmp_path / "m"), *common]) == 0
    assert main(["pull", f"models:/{name}@ghost", "--out", str(tmp_path / "n"), *common]) == 2
    assert main(["register", str(store["ckpt"]), "--metrics", str(metrics), "--name", name, "--onnx", *common]) == 0
    assert client(store["uri"]).get_model_version(name, "2").tags["onnx"] == "onnx/model.onnx"
    assert "onnx" not in client(store["uri"]).get_model_version(name, "1").tags  # registry.export_onnx: false
    assert main(["register", str(tmp_path / "no-ckpt"), *common]) == 2
    assert main(["register", str(store["ckpt"]), "--metrics", str(tmp_path / "none.json"), *common]) == 2
    assert not (tmp_path / "n").exists()


# ------------------------------------------------------------- a real mlflow server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server`` on a fresh sqlite store, 127.0.0.1 and a free port; stopped afterwards."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with real_mlflow_server(root, tmp_path_factory, artifacts=str(root / "artifacts")) as url:
        yield url


@pytest.mark.slow
def test_against_a_real_mlflow_server(mlflow_server: str, store: dict, tmp_path: Path) -> None:
    from inpnet.inpaint import load_inpainter
    from inpnet.registry.promote import promote
    from inpnet.registry.pull import pull
    from inpnet.registry.register import register

    metrics = write_metrics(tmp_path / "metrics.json", 20.0, PATTERNS, checkpoint=store["ckpt"], bank=store["bank"])
    reg = register(store["ckpt"], metrics, tracking_uri=mlflow_server, name="inpnet-served")
    assert promote("inpnet-served", tracking_uri=mlflow_server, gates=PromotionGates(reference=None)).promoted
    out = pull("models:/inpnet-served@champion", tmp_path / "model", tracking_uri=mlflow_server)
    _, info = load_inpainter(out)
    assert info["version"] == reg.version


@pytest.mark.slow
def test_from_the_champion_alias_to_its_training_run_data_and_metrics(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Train-side tracking logs the model and its data in the training run; register and
    promote it; then ``models:/NAME@champion`` alone leads to the run, its params, its
    datasets (digest and source) and the model's per-pattern and per-ratio metrics."""
    import time

    import mlflow
    import torch

    from inpnet.models.build import build_model
    from inpnet.registry.lineage import model_id_of
    from inpnet.registry.promote import promote
    from inpnet.registry.register import register
    from inpnet.registry.store import client
    from inpnet.registry.tracking import file_sha256, start_tracking
    from inpnet.train.checkpoint import save_checkpoint

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    manifests = {}
    for part in ("shards/train", "shards/val", "bank"):
        (tmp_path / part).mkdir(parents=True)
        manifests[part] = tmp_path / part / "manifest.json"
        manifests[part].write_text(json.dumps({"part": part}))
    ensure_build_model()
    variant = tiny_variant("inpnet_tiny")
    tracker = start_tracking(
        tracking_uri=mlflow_server,
        experiment="lineage",
        run_name=variant.name,
        params=variant.model_dump(mode="json"),
        tags={"variant": variant.name},
        system_metrics=True,
    )
    tracker.log_datasets(
        {
            "training": (manifests["shards/train"], "train-shards"),
            "validation": (manifests["shards/val"], "val-shards"),
        }
    )
    torch.manual_seed(0)  # test-only: model init has no generator argument
    ckpt = save_checkpoint(
        tmp_path / "ckpt",
        variant=variant,
        modules={"model": build_model(variant.model).eval()},
        state={"step": 1},
        meta={"step": 1, "mlflow_run_id": tracker.run_id},
    )
    model_id = tracker.log_model(ckpt)
    time.sleep(3)  # a few system metric samples (one a second)
    tracker.end("FINISHED")
    assert mlflow.get_tracking_uri() != mlflow_server  # the run's URI is not left behind

    metrics = write_metrics(tmp_path / "eval" / "metrics.json", 20.0, PATTERNS, checkpoint=ckpt, bank=tmp_path / "bank")
    scored = json.loads(metrics.read_text())
    scored["buckets"] = {"center": {"0.40": {"psnr": 19.5, "ssim": 0.4, "n": 2}}}
    metrics.write_text(json.dumps(scored))
    reg = register(ckpt, metrics, tracking_uri=mlflow_server, name="inpnet", bank_manifest=manifests["bank"])
    assert reg.run_id == tracker.run_id  # no register-* run: the model is the training run's
    assert promote("inpnet", tracking_uri=mlflow_server, gates=REL).promoted

    # the walk, from the alias alone
    c = client(mlflow_server)
    champion = c.get_model_version_by_alias("inpnet", "champion")
    logged = c.get_logged_model(model_id_of(champion))
    assert logged.model_id == model_id and logged.name == variant.name
    run = c.get_run(logged.source_run_id)
    assert champion.run_id == run.info.run_id == tracker.run_id and run.info.status == "FINISHED"
    assert run.data.params["model.family"] == "inpnet" and run.data.params["model.img_size"] == "32"
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)
    inputs = {}
    for di in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in di.tags}
        inputs[tags["mlflow.data.context"]] = (di.dataset, tags)
    assert set(inputs) == {"training", "validation", "evaluation"}
    for context, part in (("training", "shards/train"), ("validation", "shards/val"), ("evaluation", "bank")):
        dataset, tags = inputs[context]
        sha = file_sha256(manifests[part])
        assert tags["sha256"] == sha and dataset.digest == sha[:36], context
        assert json.loads(dataset.source)["uri"] == str(manifests[part].resolve()), context
    scores = {m.key: m for m in logged.metrics if m.key.startswith("eval/")}  # MLflow links system/* too
    assert scores["eval/psnr"].value == 20.0 and scores["eval/edges/psnr"].value == 22.0
    assert scores["eval/center/0.40/psnr"].value == 19.5
    bank_digest = file_sha256(manifests["bank"])[:36]
    assert all(m.dataset_digest == bank_digest and m.dataset_name == "mask-bank" for m in scores.values()), scores
    assert all(m.run_id == run.info.run_id for m in scores.values())
    # pulled from the registry, it is the same model
    assert champion.source == f"models:/{model_id}"


# ------------------------------------------------------------------- provenance


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real evaluator reports on a tiny bank: Telea, checkpoint A, checkpoint B (other weights)."""
    from PIL import Image

    from inpnet.config import EvalConfig
    from inpnet.evaluate.evaluator import evaluate
    from inpnet.evaluate.methods import resolve_method
    from inpnet.masks import write_bank

    root = tmp_path_factory.mktemp("provenance")
    images = root / "images"
    images.mkdir()
    for i in range(2):
        image, _ = image_and_mask(32, 32, seed=i)
        Image.fromarray(image).save(images / f"im{i}.png")
    banks = {}
    for seed in (0, 1):
        banks[seed] = root / f"bank{seed}"
        write_bank(banks[seed], size=32, patterns=["center", "edges"], ratios=[0.3], per_cell=1, seed=seed)
    ckpts = {k: make_checkpoint(root / f"ckpt_{k}", seed=s) for k, s in (("a", 0), ("b", 1))}
    cfg = EvalConfig(batch_size=4, workers=1, grid_images=1)
    metrics = {}
    for name, spec in (("telea", "telea"), ("a", str(ckpts["a"])), ("b", str(ckpts["b"]))):
        evaluate(resolve_method(spec), images, banks[0], out_dir=root / "reports" / name, cfg=cfg)
        metrics[name] = root / "reports" / name / "metrics.json"
    return {"root": root, "ckpt": ckpts, "metrics": metrics, "banks": banks}


def test_register_refuses_metrics_that_are_not_of_these_weights_or_this_bank(evaluations: dict) -> None:
    from inpnet.registry.register import register

    ckpt, metrics, banks = evaluations["ckpt"]["a"], evaluations["metrics"], evaluations["banks"]
    refused = {
        "another method": (metrics["telea"], None, r"score the method 'telea' \(baseline\), not the checkpoint"),
        "another checkpoint": (
            metrics["b"],
            None,
            r"scored the weights \w{16}, but .*ckpt_a holds the weights \w{16}: "
            "these are another checkpoint's metrics",
        ),
        "another mask bank": (
            metrics["a"],
            banks[1] / "manifest.json",
            r"evaluated on the masks .*bank0.*not on the mask bank .*bank1",
        ),
    }
    for metrics_json, bank, message in refused.values():
        with pytest.raises(RegistryError, match=message):
            register(ckpt, metrics_json, tracking_uri="sqlite:///unused-never-reached.db", name="x", bank_manifest=bank)
    lonely = evaluations["root"] / "lonely" / "metrics.json"  # metrics without their report
    lonely.parent.mkdir()
    lonely.write_bytes(metrics["a"].read_bytes())
    with pytest.raises(RegistryError, match="no evaluation report beside"):
        register(ckpt, lonely, tracking_uri="sqlite:///unused-never-reached.db", name="x")
    old = evaluations["root"] / "old" / "metrics.json"  # a report written before reports named the weights
    old.parent.mkdir()
    old.write_bytes(metrics["a"].read_bytes())
    report = json.loads(metrics["a"].with_name("report.json").read_text())
    del report["method_settings"]["weights_sha256"]
    old.with_name("report.json").write_text(json.dumps(report))
    with pytest.raises(RegistryError, match="records no weights hash"):
        register(ckpt, old, tracking_uri="sqlite:///unused-never-reached.db", name="x")
    assert not Path("unused-never-reached.db").exists()


def test_cli_register_of_telea_metrics_for_a_checkpoint_is_one_line_exit_2(
    evaluations: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import cli_error_lines

    from inpnet.cli import main

    code = main(
        [
            "register",
            str(evaluations["ckpt"]["a"]),
            "--metrics",
            str(evaluations["metrics"]["telea"]),
            "--params",
            str(REPO_ROOT / "params.yaml"),
            "--tracking-uri",
            "sqlite:///unused-never-reached.db",
        ]
    )
    lines = cli_error_lines(capsys.readouterr().err)
    assert code == 2 and len(lines) == 1 and "'telea'" in lines[0], lines


@pytest.mark.slow
def test_register_own_evaluation_then_promote_only_what_was_evaluated(evaluations: dict) -> None:
    from inpnet.registry.promote import promote
    from inpnet.registry.register import register
    from inpnet.registry.store import client

    uri, name = os.environ["MLFLOW_TRACKING_URI"], f"inpnet-prov-{uuid.uuid4().hex[:8]}"
    bank = evaluations["banks"][0] / "manifest.json"
    reg = register(
        evaluations["ckpt"]["a"], evaluations["metrics"]["a"], tracking_uri=uri, name=name, bank_manifest=bank
    )
    c = client(uri)
    tags = c.get_model_version(name, reg.version).tags
    assert tags["weights_sha256"] == tags["evaluation.weights_sha256"]
    from inpnet.registry.tracking import file_sha256

    assert tags["mask_bank_sha256"] == file_sha256(bank)
    c.delete_model_version_tag(
        name, reg.version, "evaluation.weights_sha256"
    )  # as a version registered before the check
    d = promote(name, tracking_uri=uri, gates=REL)
    assert not d.promoted and "no evaluation of its own weights" in d.reasons[0]
    c.set_model_version_tag(name, reg.version, "evaluation.weights_sha256", tags["weights_sha256"])
    assert promote(name, tracking_uri=uri, gates=REL).promoted


def test_the_register_flow_retries_a_store_failure_but_not_a_refusal() -> None:
    from prefect.states import Failed

    from pipelines.register import _transient

    assert not _transient(None, None, Failed(data=RegistryError("metrics of other weights")))
    assert _transient(None, None, Failed(data=RuntimeError("database is locked")))


# ------------------------------------------------------------- ONNX with the version


def test_register_with_onnx_refuses_a_telea_prefill_before_touching_the_store(tmp_path: Path) -> None:
    from inpnet.export import ExportError
    from inpnet.models.build import build_model
    from inpnet.registry.register import register
    from inpnet.train.checkpoint import save_checkpoint

    variant = tiny_variant("inpnet_tiny")
    variant = variant.model_copy(update={"model": variant.model.model_copy(update={"prefill": "telea"})})
    ckpt = save_checkpoint(
        tmp_path / "ckpt",
        variant=variant,
        modules={"model": build_model(variant.model).eval()},
        state={"step": 1},
        meta={"step": 1},
    )
    store = tmp_path / "never.db"
    with pytest.raises(ExportError, match="prefill 'telea'"):
        register(ckpt, None, tracking_uri=f"sqlite:///{store}", name="x", export_onnx=True)
    assert not store.exists()


@pytest.mark.slow
def test_a_version_carries_its_onnx_export_and_pull_and_inpaint_use_it(
    mlflow_server: str, store: dict, tmp_path: Path
) -> None:
    from PIL import Image

    from inpnet.cli import main
    from inpnet.registry.lineage import model_id_of
    from inpnet.registry.pull import pull
    from inpnet.registry.register import register
    from inpnet.registry.store import client

    metrics = write_metrics(tmp_path / "metrics.json", 20.0, PATTERNS, checkpoint=store["ckpt"], bank=store["bank"])
    reg = register(store["ckpt"], metrics, tracking_uri=mlflow_server, name="inpnet-onnx", export_onnx=True)
    c = client(mlflow_server)
    mv = c.get_model_version("inpnet-onnx", reg.version)
    assert mv.tags["onnx"] == "onnx/model.onnx"
    assert c.get_logged_model(model_id_of(mv)).tags["onnx"] == "onnx/model.onnx"
    uri = "models:/inpnet-onnx@challenger"
    common = ["--tracking-uri", mlflow_server, "--params", str(REPO_ROOT / "params.yaml")]

    # the pulled model folder carries it; --onnx fetches it alone
    full = pull(uri, tmp_path / "full", tracking_uri=mlflow_server)
    assert (full / "onnx" / "model.onnx").is_file() and (full / "MLmodel").is_file()
    assert json.loads((full / "registry.json").read_text())["onnx"] == "onnx/model.onnx"
    only = tmp_path / "only"
    assert main(["pull", uri, "--onnx", "--out", str(only), *common]) == 0
    assert sorted(p.name for p in only.iterdir()) == ["export.json", "model.onnx", "registry.json"]
    exported = json.loads((only / "export.json").read_text())
    assert exported["weights_sha256"] == mv.tags["weights_sha256"] and exported["parity_max_abs"] <= 1e-4
    assert json.loads((only / "registry.json").read_text())["version"] == reg.version

    # inpaint runs it from the registry and from both folders, as the checkpoint does
    image, hole = image_and_mask(45, 70)
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)).save(tmp_path / "mask.png")
    outs = {}
    for key, model in {
        "ckpt": [str(store["ckpt"])],
        "registry": [uri, "--onnx"],
        "pulled": [str(full), "--onnx"],
        "onnx-only": [str(only)],
    }.items():
        out = tmp_path / f"{key}.png"
        args = [
            "inpaint",
            "--model",
            *model,
            "--image",
            str(tmp_path / "img.png"),
            "--mask",
            str(tmp_path / "mask.png"),
        ]
        assert main([*args, "--out", str(out), *common]) == 0, key
        outs[key] = np.asarray(Image.open(out)).astype(int)
    for key in ("registry", "pulled", "onnx-only"):
        assert np.abs(outs[key] - outs["ckpt"]).max() <= 1, key  # within 1/255
        assert np.array_equal(outs[key][~hole], image[~hole]), key

    # a version without one is refused with the way to get one
    plain = register(store["ckpt"], metrics, tracking_uri=mlflow_server, name="inpnet-no-onnx")
    assert "onnx" not in c.get_model_version("inpnet-no-onnx", plain.version).tags
    with pytest.raises(RegistryError, match=r"version 1 carries no ONNX export.*registry.export_onnx"):
        pull("models:/inpnet-no-onnx/1", tmp_path / "none", tracking_uri=mlflow_server, onnx=True)
    assert not (tmp_path / "none").exists()
    args = ["inpaint", "--model", "models:/inpnet-no-onnx/1", "--onnx", "--image", str(tmp_path / "img.png")]
    assert main([*args, "--out", str(tmp_path / "x.png"), *common]) == 2


# ------------------------------------------------------- what a person sees in MLflow


@pytest.fixture(scope="module")
def seen(mlflow_server: str, evaluations: dict) -> dict:
    """Checkpoint A registered on the real server with its real evaluation folder."""
    from inpnet.registry.lineage import model_id_of
    from inpnet.registry.register import register
    from inpnet.registry.store import client

    metrics = evaluations["metrics"]["a"]
    reg = register(
        evaluations["ckpt"]["a"],
        metrics,
        tracking_uri=mlflow_server,
        name="inpnet-seen",
        bank_manifest=evaluations["banks"][0] / "manifest.json",
    )
    c = client(mlflow_server)
    run = c.get_run(reg.run_id)
    model_id = model_id_of(c.get_model_version("inpnet-seen", reg.version))
    return {
        "url": mlflow_server,
        "run_id": reg.run_id,
        "experiment_id": run.info.experiment_id,
        "folder": f"evaluation/{model_id}",
        "report": metrics.parent,
    }


@pytest.mark.slow
def test_the_evaluation_run_carries_the_grid_and_the_plots(seen: dict) -> None:
    """The files, through the REST endpoints the MLflow UI's artifact view calls, are the report's own."""
    import requests

    api = f"{seen['url']}/ajax-api/2.0/mlflow/artifacts/list"
    listed = requests.get(api, params={"run_uuid": seen["run_id"], "path": seen["folder"]}, timeout=30).json()
    names = {f["path"].removeprefix(seen["folder"] + "/") for f in listed["files"]}
    assert {"grid.png", "metrics.json", "report.json", "table.md", "plots"} <= names, names
    plots = requests.get(api, params={"run_uuid": seen["run_id"], "path": f"{seen['folder']}/plots"}, timeout=30)
    assert {f["path"].rsplit("/", 1)[-1] for f in plots.json()["files"]} == {"psnr_by_ratio.png", "ssim_by_ratio.png"}
    for name in ("grid.png", "plots/psnr_by_ratio.png", "report.json"):
        got = requests.get(
            f"{seen['url']}/get-artifact",
            params={"path": f"{seen['folder']}/{name}", "run_uuid": seen["run_id"]},
            timeout=30,
        )
        assert got.status_code == 200 and got.content == (seen["report"] / name).read_bytes(), name
    report = json.loads((seen["report"] / "report.json").read_text())
    assert {(e["pattern"], e["rank"]) for e in report["grid"]} == {
        (p, r) for p in ("center", "edges") for r in ("worst", "best")
    }


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install -y chromium)")
def test_the_mlflow_ui_run_page_shows_the_grid_and_the_plots(seen: dict, tmp_path: Path) -> None:
    """Headless Chromium renders the run's artifact page (a React app): its tree lists the grid,
    the plots and the metrics, and the selected picture is previewed with the bytes the app fetched."""
    page = f"{seen['url']}/#/experiments/{seen['experiment_id']}/runs/{seen['run_id']}/artifactPath/{seen['folder']}"
    for selected, listed in (
        ("grid.png", ("grid.png", "plots", "metrics.json", "table.md")),
        ("plots/psnr_by_ratio.png", ("psnr_by_ratio.png", "ssim_by_ratio.png")),
    ):
        dom = _dump_dom(f"{page}/{selected}", tmp_path)
        for name in listed:
            assert f'artifact-name="{name}"' in dom, (selected, name, tmp_path / "page.html")
        previews = re.findall(rf'<img[^>]*alt="{re.escape(seen["folder"])}/{re.escape(selected)}"[^>]*>', dom)
        assert previews and 'src="blob:' in previews[0], (selected, tmp_path / "page.html")


def _dump_dom(url: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran (virtual time lets the app fetch and render)."""
    import subprocess

    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # root in CI containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=30000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (tmp_path / "page.html").write_text(done.stdout)  # to look at when an assertion fails
    return done.stdout


def test_turning_export_onnx_on_makes_new_versions_of_unchanged_variants(tmp_path: Path) -> None:
    from helpers.params import params_for_tests

    from pipelines.register import fingerprint

    params = params_for_tests()
    params = params.model_copy(update={"train": params.train.model_copy(update={"out_dir": str(tmp_path / "models")})})
    make_checkpoint(tmp_path / "models" / "inpnet_tiny")
    off = fingerprint(params, "inpnet_tiny")
    on = params.model_copy(update={"registry": params.registry.model_copy(update={"export_onnx": True})})
    assert fingerprint(on, "inpnet_tiny") != off  # the summary's entry no longer matches: registered again
    assert fingerprint(params, "inpnet_tiny") == off
