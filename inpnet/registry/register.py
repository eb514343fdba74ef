"""Registering a checkpoint: log it as an MLflow pyfunc model version with its provenance.

A registered model is a models-from-code pyfunc (:mod:`inpnet.registry.pyfunc_model`) whose
artifacts are the weights (``model.safetensors``, EMA weights when the checkpoint has them)
and ``config.json`` (the resolved variant). The inpnet package travels with it as code, so a
pulled folder needs only the third-party libraries listed in its ``requirements.txt``.

There is one registered model name per family (``RegistryConfig.model_names``); each new
version gets the alias ``challenger`` and tags that say where it came from (variant, shard
manifest hash, mask bank hash, git commit, ``weights_sha256``) and how it scored
(``metrics.*``, and ``evaluation.weights_sha256``: the weights the evaluation scored), which
is what :mod:`inpnet.registry.promote` compares. Registering refuses metrics whose
``report.json`` scored another method, other weights or another mask bank.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inpnet.errors import CheckpointError, DataError, RegistryError
from inpnet.registry.store import CHALLENGER, CONFIG_FILE, WEIGHTS_FILE, RegisteredVersion, client, tracking

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

__all__ = ["metric_tags", "register"]

log = logging.getLogger(__name__)


def metric_tags(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Flatten an evaluator ``metrics.json`` into ``metrics.<name>`` / ``metrics.pattern.<p>.<name>`` tags."""
    tags = {f"metrics.{k}": repr(float(v)) for k, v in metrics.get("overall", {}).items() if v is not None}
    for pattern, values in metrics.get("patterns", {}).items():
        tags.update({f"metrics.pattern.{pattern}.{k}": repr(float(v)) for k, v in values.items() if v is not None})
    return tags


def _package_code(dst: Path) -> Path:
    """Copy the inpnet package (sources only) so the logged model carries its own code."""
    import inpnet

    src = Path(inpnet.__file__).parent
    shutil.copytree(src, dst / "inpnet", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "*.tmp"))
    return dst / "inpnet"


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("mlflow", "torch", "timm", "safetensors", "numpy", "pillow", "pandas", "pydantic", "pyyaml"):
        try:
            reqs.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(dist)
    return reqs


def _input_example(img_size: int) -> Any:
    import base64

    import numpy as np
    import pandas as pd

    from inpnet.images import encode_png

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(img_size, img_size, 3), dtype=np.uint8)
    mask = np.zeros((img_size, img_size, 3), dtype=np.uint8)
    mask[img_size // 4 : img_size // 2, img_size // 4 : img_size // 2] = 255

    def enc(a: np.ndarray) -> str:
        return base64.b64encode(encode_png(a)).decode("ascii")

    return pd.DataFrame({"image": [enc(image)], "mask": [enc(mask)]})


def _signature() -> ModelSignature:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image"), ColSpec("string", "mask", required=False)]),
        outputs=Schema([ColSpec("string", "image")]),
        params=ParamSchema([ParamSpec("invert_mask", "boolean", False)]),
    )


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
) -> RegisteredVersion:
    """Log a checkpoint as a pyfunc model, register it and give it the alias ``challenger``.

    Args:
        ckpt_dir: training checkpoint folder (read with ``inpnet.train.checkpoint.load_model``,
            EMA weights when present).
        metrics_json: the evaluator's ``metrics.json`` for this checkpoint (tags ``metrics.*``);
            promotion needs it. The ``report.json`` beside it must show that it scored these
            very weights (``method_settings.weights_sha256``) on the mask bank
            ``bank_manifest`` (when given); otherwise nothing is registered.
        tracking_uri: MLflow tracking/registry URI.
        name: registered model name; default ``model_names[family]`` or the family itself.
        model_names: family -> registered name (``RegistryConfig.model_names``).
        experiment: experiment of the logging run.
        tags: extra version tags.
        shard_manifest, bank_manifest: manifests whose SHA-256 is recorded
            (``shard_manifest_sha256``, ``mask_bank_sha256``); the bank hash is what promotion
            uses to refuse comparisons across different holes. Without ``bank_manifest`` the
            bank hash the evaluation recorded is used.

    Raises:
        RegistryError: the metrics are not an evaluation of this checkpoint's weights (another
            method, other weights, another mask bank, or no report.json to tell).
    """
    import mlflow
    import safetensors.torch

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
    version_tags = {**{k: str(v) for k, v in provenance.items() if v}, **metric_tags(metrics), **dict(tags or {})}
    code_file = Path(__file__).with_name("pyfunc_model.py")
    with tempfile.TemporaryDirectory(prefix="inpnet-register-") as tmp, tracking(tracking_uri):
        staged = Path(tmp)
        safetensors.torch.save_model(model, str(staged / WEIGHTS_FILE))
        (staged / CONFIG_FILE).write_text(variant.model_dump_json(indent=2))
        if metrics:
            (staged / "metrics.json").write_text(json.dumps(metrics, indent=2))
        mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=f"register-{variant.name}") as run:
            mlflow.set_tags({k: v for k, v in version_tags.items() if not k.startswith("metrics.")})
            flat = {k.removeprefix("metrics.").replace(".", "_"): float(v) for k, v in metric_tags(metrics).items()}
            if flat:
                mlflow.log_metrics(flat)
            if metrics:
                mlflow.log_artifact(str(staged / "metrics.json"), artifact_path="evaluation")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(code_file),
                artifacts={"weights": str(staged / WEIGHTS_FILE), "config": str(staged / CONFIG_FILE)},
                code_paths=[str(_package_code(staged / "code"))],
                model_config={"device": "auto"},
                signature=_signature(),
                input_example=_input_example(variant.model.img_size),
                pip_requirements=_requirements(),
                registered_model_name=name,
            )
    version = str(info.registered_model_version)
    c = client(tracking_uri)
    for key, value in version_tags.items():
        c.set_model_version_tag(name, version, key, value)
    c.set_registered_model_alias(name, CHALLENGER, version)
    log.info("registered %s as %s version %s (alias %s)", variant.name, name, version, CHALLENGER)
    return RegisteredVersion(name=name, version=version, run_id=run.info.run_id, model_uri=f"models:/{name}/{version}")


def _evaluation_of(
    metrics_json: Path, ckpt_dir: Path, weights: str, bank_manifest: str | Path | None
) -> dict[str, str | None]:
    """What the ``report.json`` beside ``metrics_json`` evaluated, checked against the checkpoint.

    Returns ``{"weights_sha256", "mask_bank_sha256"}`` as the report recorded them.

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
    return {"weights_sha256": scored, "mask_bank_sha256": bank}


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
