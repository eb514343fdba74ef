"""Registering a checkpoint: the logged model of its training run becomes a model version.

The model is the MLflow 3 logged model that the trainer logged in the training run
(:mod:`inpnet.registry.lineage`: a models-from-code pyfunc with the weights and the resolved
variant as artifacts, the inpnet package as code). Register finds it in the run recorded in
the checkpoint (by ``weights_sha256``); a checkpoint whose run is not in this store, or whose
run has no model of these weights, gets it logged first (in the training run when it exists,
else in a ``register-<variant>`` run of its own).

The evaluation's ``metrics.json`` is logged as metrics linked to the model's id and to the
mask bank dataset (``eval/psnr``, ``eval/<pattern>/psnr``, ``eval/<pattern>/<ratio>/psnr``),
the bank as an ``evaluation`` input of the run. Then ``models:/<model_id>`` is registered
under the family's name (``RegistryConfig.model_names``) with the alias ``challenger`` and
provenance tags (variant, shard manifest hash, mask bank hash, git commit,
``weights_sha256``, ``evaluation.weights_sha256``: the weights the evaluation scored), which
:mod:`inpnet.registry.promote` checks with the metrics. Registering refuses metrics whose
``report.json`` scored another method, other weights or another mask bank.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inpnet.errors import CheckpointError, DataError, RegistryError
from inpnet.registry.store import CHALLENGER, RegisteredVersion, client, tracking

if TYPE_CHECKING:
    from mlflow.data.meta_dataset import MetaDataset

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(
    ckpt_dir: str | Path,
    metrics_json: str | Path | None,
    *,
    tracking_uri: str | None,
    name: str | None = None,
    model_names: Mapping[str, str] | None = None,
    experiment: str = "inpnet",
    tags: Mapping[str, str] | None = None,
    shard_manifest: str | Path | None = None,
    bank_manifest: str | Path | None = None,
    export_onnx: bool = False,
) -> RegisteredVersion:
    """Register the checkpoint's logged model (of its training run), give it ``challenger``.

    Args:
        ckpt_dir: training checkpoint folder (read with ``inpnet.train.checkpoint.load_model``,
            EMA weights when present); its ``mlflow_run_id`` is the training run.
        metrics_json: the evaluator's ``metrics.json`` for this checkpoint, logged as
            ``eval/...`` metrics of the logged model; promotion needs it. The ``report.json`` beside it must show that it scored these
            very weights (``method_settings.weights_sha256``) on the mask bank
            ``bank_manifest`` (when given); otherwise nothing is registered.
        tracking_uri: MLflow tracking/registry URI.
        name: registered model name; default ``model_names[family]`` or the family itself.
        model_names: family -> registered name (``RegistryConfig.model_names``).
        experiment: experiment of the ``register-<variant>`` run made when the training run
            is not in this store.
        tags: extra version tags.
        shard_manifest, bank_manifest: manifests whose SHA-256 is recorded
            (``shard_manifest_sha256``, ``mask_bank_sha256``); the bank hash is what promotion
            uses to refuse comparisons across different holes, and the bank is the dataset the
            metrics are linked to (an ``evaluation`` input). Without ``bank_manifest`` the bank
            the evaluation's report recorded is used. The shard manifest becomes a
            ``training`` input only of a ``register-<variant>`` run (the trainer logs its own).
        export_onnx: also export the model to ONNX (:func:`inpnet.export.export_variant_onnx`,
            checked against PyTorch to 1e-4) and log ``model.onnx`` and ``export.json`` under
            ``onnx/`` of the logged model, so the version carries them (``inpnet pull --onnx``,
            ``inpnet inpaint --onnx``); the version is tagged ``onnx``. The export runs first: a
            model that cannot be exported leaves the registry untouched.

    Raises:
        RegistryError: the metrics are not an evaluation of this checkpoint's weights (another
            method, other weights, another mask bank, or no report.json to tell).
        ExportError: ``export_onnx`` and the model cannot be exported (the ``telea`` pre-fill).
    """
    import mlflow

    from inpnet.registry.lineage import (
        EVALUATION,
        ONNX_TAG,
        TRAINING,
        eval_metrics,
        find_logged_model,
        log_checkpoint_model,
        log_dataset,
        log_evaluation,
        log_onnx,
    )
    from inpnet.registry.tracking import file_sha256, git_commit
    from inpnet.train.checkpoint import load_model, read_meta, weights_sha256

    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"{ckpt_dir}: checkpoint folder not found (train the variant first)")
    metrics = _read_metrics(metrics_json)
    model, variant = load_model(ckpt_dir, ema=True, device="cpu")
    weights = weights_sha256(model)
    evaluated = _evaluation_of(Path(metrics_json), ckpt_dir, weights, bank_manifest) if metrics_json is not None else {}
    family = variant.model.family
    name = name or dict(model_names or {}).get(family, family)
    training = _training_run_tags(read_meta(ckpt_dir).get("mlflow_run_id"), tracking_uri)
    provenance = {
        "variant": variant.name,
        "family": family,
        "checkpoint": str(ckpt_dir.resolve()),
        "training_run_id": training.get("run_id"),
        # the training run knows which shards and code it saw; fall back to what is here now
        "git_commit": training.get("git_commit") or git_commit() or "unknown",
        "shard_manifest_sha256": training.get("shard_manifest_sha256")
        or (file_sha256(shard_manifest) if shard_manifest else None),
        "mask_bank_sha256": evaluated.get("mask_bank_sha256")
        or (file_sha256(bank_manifest) if bank_manifest else None),
        "weights_sha256": weights,
        # what the evaluation scored; promotion requires it to equal weights_sha256
        "evaluation.weights_sha256": evaluated.get("weights_sha256"),
    }
    version_tags = {**{k: str(v) for k, v in provenance.items() if v}, **dict(tags or {})}
    run_id = training.get("run_id")
    with tempfile.TemporaryDirectory(prefix="inpnet-register-") as tmp:
        onnx_file = None
        if export_onnx:  # before anything is logged: a model that cannot be exported changes nothing
            from inpnet.export import export_variant_onnx

            onnx_file = export_variant_onnx(model, variant, Path(tmp) / "onnx")
        with tracking(tracking_uri):
            if run_id is None:  # trained without tracking here: the model gets a run of its own
                c = client(tracking_uri)
                exp = c.get_experiment_by_name(experiment)
                # no set_experiment: a process-wide active experiment would refuse reopening runs of others
                exp_id = exp.experiment_id if exp is not None else c.create_experiment(experiment)
                run = mlflow.start_run(
                    experiment_id=exp_id, run_name=f"register-{variant.name}", log_system_metrics=False
                )
            else:  # the model and its scores belong to the training run
                run = mlflow.start_run(run_id=run_id, log_system_metrics=False)
            with run:
                logged = find_logged_model(run.info.run_id, weights, tracking_uri=tracking_uri) if run_id else None
                if logged is None:
                    if run_id is None and shard_manifest is not None:
                        log_dataset(shard_manifest, "train-shards", TRAINING)
                    logged = log_checkpoint_model(ckpt_dir)
                if onnx_file is not None:
                    version_tags[ONNX_TAG] = log_onnx(logged.model_id, onnx_file, tracking_uri=tracking_uri)
                bank_sha = provenance["mask_bank_sha256"]
                bank = _bank_dataset(bank_sha, bank_manifest or evaluated.get("mask_bank_source"))
                if bank is not None and bank_sha:
                    mlflow.log_input(bank, context=EVALUATION, tags={"sha256": bank_sha})
                scores = eval_metrics(metrics)
                if scores:
                    mlflow.log_metrics(scores, model_id=logged.model_id, dataset=bank)
                    assert metrics_json is not None  # scores come from it
                    log_evaluation(Path(metrics_json).parent, logged.model_id)
            mv = mlflow.register_model(f"models:/{logged.model_id}", name, tags=version_tags)
    version = str(mv.version)
    client(tracking_uri).set_registered_model_alias(name, CHALLENGER, version)
    log.info(
        "registered %s (model %s of run %s) as %s version %s (alias %s)",
        variant.name,
        logged.model_id,
        run.info.run_id,
        name,
        version,
        CHALLENGER,
    )
    return RegisteredVersion(name=name, version=version, run_id=run.info.run_id, model_uri=f"models:/{name}/{version}")


def _bank_dataset(sha: str | None, source: str | Path | None) -> MetaDataset | None:
    """The mask bank the evaluation scored on, as an MLflow dataset (None when unknown)."""
    from inpnet.registry.lineage import manifest_dataset

    if not sha or not source:
        return None
    return manifest_dataset(source, sha, "mask-bank")


def _evaluation_of(
    metrics_json: Path, ckpt_dir: Path, weights: str, bank_manifest: str | Path | None
) -> dict[str, str | None]:
    """What the ``report.json`` beside ``metrics_json`` evaluated, checked against the checkpoint.

    Returns ``{"weights_sha256", "mask_bank_sha256", "mask_bank_source"}`` as the report recorded
    them (the source is the bank's manifest path).

    Raises:
        RegistryError: no readable report, or it scored another method, other weights or
            another mask bank than ``bank_manifest``.
    """
    from inpnet.registry.tracking import file_sha256

    path = metrics_json.with_name("report.json")
    redo = (
        f"evaluate the checkpoint itself (`inpnet evaluate --method {ckpt_dir} --out DIR ...`) "
        "and register it with DIR/metrics.json"
    )
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise RegistryError(
            f"{path}: no evaluation report beside {metrics_json}, so nothing shows whose metrics these are; {redo}"
        ) from None
    except (OSError, ValueError) as err:
        raise RegistryError(f"{path}: unreadable evaluation report ({err}); {redo}") from None
    settings = report.get("method_settings") or {}
    if settings.get("kind") != "model":
        raise RegistryError(
            f"{metrics_json}: these metrics score the method {report.get('method')!r} "
            f"({settings.get('kind', 'of unknown kind')}), not the checkpoint {ckpt_dir}; {redo}"
        )
    scored = settings.get("weights_sha256")
    if scored != weights:
        what = (
            f"scored the weights {scored[:16]}" if scored else "records no weights hash (made before reports had one)"
        )
        raise RegistryError(
            f"{path}: the evaluation of {report.get('method')!r} {what}, but {ckpt_dir} holds the weights "
            f"{weights[:16]}: these are another checkpoint's metrics; {redo}"
        )
    masks = report.get("masks") or {}
    bank = masks.get("manifest_sha256")
    if bank_manifest is not None and (given := file_sha256(bank_manifest)) != bank:
        raise RegistryError(
            f"{path}: evaluated on the masks {masks.get('source')!r} (manifest sha256 {bank}), not on the "
            f"mask bank {bank_manifest} (sha256 {given or 'missing: no such file'}); {redo} on that bank"
        )
    manifest = Path(masks["source"]) / "manifest.json" if masks.get("source") else None
    return {"weights_sha256": scored, "mask_bank_sha256": bank, "mask_bank_source": str(manifest) if manifest else None}


def _training_run_tags(run_id: str | None, tracking_uri: str | None) -> dict[str, str]:
    """Tags of the training run recorded in the checkpoint, when that run is in this store."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}
    try:
        return {**client(tracking_uri).get_run(run_id).data.tags, "run_id": run_id}
    except MlflowException:
        log.info("training run %s is not in %s; provenance taken from the working tree", run_id, tracking_uri)
        return {}


def _read_metrics(metrics_json: str | Path | None) -> dict[str, Any]:
    if metrics_json is None:
        return {}
    path = Path(metrics_json)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: metrics file not found (run `inpnet evaluate` for this checkpoint first)") from None
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or "overall" not in data:
        raise DataError(f"{path}: expected the evaluator's metrics.json with an 'overall' section")
    return data
