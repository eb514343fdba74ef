"""MLflow 3 lineage: the trained model as a logged model of its training run, its data, its scores.

* :func:`log_checkpoint_model` logs a checkpoint as a models-from-code pyfunc
  (:mod:`inpnet.registry.pyfunc_model`) *in the active run*, an MLflow 3 logged model named
  after the variant, tagged with its ``weights_sha256``. The trainer calls it at the end of
  training, so the model belongs to its training run; register finds it there again
  (:func:`find_logged_model`) and registers that very model.
* :func:`manifest_dataset` turns a manifest (shards, val split, mask bank) into an MLflow
  dataset whose source is the manifest's path or URI and whose digest is its sha256;
  :func:`log_dataset` logs it as a run input with a context (``training``, ``validation``,
  ``evaluation``).
* :func:`eval_metrics` flattens an evaluator ``metrics.json`` into metric names
  (``eval/psnr``, ``eval/<pattern>/psnr``, ``eval/<pattern>/<ratio>/psnr``); register logs them
  linked to the model id and the evaluation dataset, and promotion reads them back.
* :func:`log_evaluation` logs what a person looks at, the evaluation's ``grid.png`` (each
  pattern's worst and best pairs), ``plots/psnr_by_ratio.png``, ``plots/ssim_by_ratio.png``,
  ``table.md`` and its JSON files, as artifacts of the run under ``evaluation/<model_id>/``.
* :func:`log_onnx` adds an ONNX export (``model.onnx`` + ``export.json``) to a logged model,
  under ``onnx/``: every registered version of that model then carries it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inpnet.registry.store import CONFIG_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import LoggedModel
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import ModelSignature

__all__ = [
    "DIGEST_CHARS",
    "EVALUATION",
    "EVALUATION_FILES",
    "ONNX_DIR",
    "ONNX_TAG",
    "TRAINING",
    "VALIDATION",
    "WEIGHTS_TAG",
    "eval_metrics",
    "find_logged_model",
    "log_checkpoint_model",
    "log_dataset",
    "log_evaluation",
    "log_onnx",
    "manifest_dataset",
    "model_id_of",
]

log = logging.getLogger(__name__)

TRAINING, VALIDATION, EVALUATION = "training", "validation", "evaluation"  # dataset input contexts
WEIGHTS_TAG = "weights_sha256"  # on each logged model: the weights it holds
DIGEST_CHARS = 36  # MLflow stores dataset digests in 36 characters; the full sha256 is an input tag
_COUNTS = {"n", "excluded"}  # sample counts, not scores
ONNX_DIR = "onnx"  # the logged model's folder with model.onnx and export.json
ONNX_TAG = "onnx"  # on the logged model and its versions: the ONNX file's path in the model's folder
# an evaluation folder's files the run carries (inpnet.evaluate.report writes them; the plots by PLOT_METRICS)
EVALUATION_FILES = (
    "metrics.json",
    "report.json",
    "table.md",
    "grid.png",
    "plots/psnr_by_ratio.png",
    "plots/ssim_by_ratio.png",
)


def eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """An evaluator ``metrics.json`` as ``eval/<name>``, ``eval/<pattern>/<name>`` and
    ``eval/<pattern>/<ratio>/<name>`` floats (None values are left out)."""

    def scores(prefix: str, values: Mapping[str, Any]) -> dict[str, float]:
        return {
            f"{prefix}/{k}": float(v)
            for k, v in values.items()
            if v is not None and k not in _COUNTS and isinstance(v, int | float)
        }

    out = scores("eval", metrics.get("overall", {}))
    for pattern, values in metrics.get("patterns", {}).items():
        out.update(scores(f"eval/{pattern}", values))
    for pattern, ratios in metrics.get("buckets", {}).items():
        for ratio, values in ratios.items():
            out.update(scores(f"eval/{pattern}/{ratio}", values))
    return out


def manifest_dataset(source: str | Path, sha256: str, name: str) -> MetaDataset:
    """A dataset for a manifest: ``source`` its path (made absolute) or URI, digest its sha256."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    uri = str(source) if "://" in str(source) else str(Path(source).resolve())
    with warnings.catch_warnings():  # a local path matches MLflow's local source type twice; either is it
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        origin = resolve_dataset_source(uri)
    return MetaDataset(  # type: ignore[abstract]  # MetaDataset implements profile; mypy misses it
        origin, name=name, digest=sha256[:DIGEST_CHARS]
    )


def log_dataset(manifest: str | Path, name: str, context: str) -> MetaDataset | None:
    """Log the manifest ``manifest`` (a file, or a URL on object storage) as an input of the
    active run; None when it is absent."""
    import mlflow

    from inpnet.registry.tracking import manifest_sha256

    sha = manifest_sha256(manifest)
    if sha is None:
        log.info("%s: no manifest, so no %s dataset is logged", manifest, context)
        return None
    dataset = manifest_dataset(manifest, sha, name)
    mlflow.log_input(dataset, context=context, tags={"sha256": sha})
    return dataset


def model_id_of(version: ModelVersion) -> str | None:
    """The logged model a registered version was made from: its ``model_id``, which the sqlite
    registry does not fill in, else the ``models:/<model_id>`` it was registered from."""
    if version.model_id:
        return str(version.model_id)
    source = str(version.source or "")
    rest = source.removeprefix("models:/")
    return rest if rest != source and rest and "/" not in rest and "@" not in rest else None


def find_logged_model(run_id: str, weights: str, *, tracking_uri: str | None) -> LoggedModel | None:
    """The model logged in run ``run_id`` that holds the weights ``weights``, if any."""
    from inpnet.registry.store import client

    c = client(tracking_uri)
    experiment = c.get_run(run_id).info.experiment_id
    found = c.search_logged_models(experiment_ids=[experiment], filter_string=f"source_run_id = '{run_id}'")
    matches = [m for m in found if m.tags.get(WEIGHTS_TAG) == weights]
    return max(matches, key=lambda m: m.creation_timestamp) if matches else None


def log_checkpoint_model(ckpt_dir: str | Path) -> LoggedModel:
    """Log the checkpoint in ``ckpt_dir`` (EMA weights when present) as a pyfunc logged model of
    the active run, named after its variant; returns the logged model (``model_id``)."""
    import mlflow
    import safetensors.torch

    from inpnet.train.checkpoint import load_model, weights_sha256

    model, variant = load_model(Path(ckpt_dir), ema=True, device="cpu")
    weights = weights_sha256(model)
    code_file = Path(__file__).with_name("pyfunc_model.py")
    with tempfile.TemporaryDirectory(prefix="inpnet-model-") as tmp:
        staged = Path(tmp)
        safetensors.torch.save_model(model, str(staged / WEIGHTS_FILE))
        (staged / CONFIG_FILE).write_text(variant.model_dump_json(indent=2))
        info = mlflow.pyfunc.log_model(
            name=variant.name,
            python_model=str(code_file),
            artifacts={"weights": str(staged / WEIGHTS_FILE), "config": str(staged / CONFIG_FILE)},
            code_paths=[str(_package_code(staged / "code"))],
            model_config={"device": "auto"},
            signature=_signature(),
            input_example=_input_example(variant.model.img_size),
            pip_requirements=_requirements(),
            tags={WEIGHTS_TAG: weights, "variant": variant.name, "family": variant.model.family},
        )
    log.info("logged %s as model %s of run %s", variant.name, info.model_id, info.run_id)
    return mlflow.get_logged_model(info.model_id)


def log_evaluation(report_dir: str | Path, model_id: str) -> list[str]:
    """Log the evaluation folder's :data:`EVALUATION_FILES` that exist as artifacts of the active
    run under ``evaluation/<model_id>/`` (the plots under ``.../plots/``); returns their artifact paths."""
    import mlflow

    report_dir = Path(report_dir)
    logged = []
    for name in EVALUATION_FILES:
        path = report_dir / name
        if not path.is_file():
            log.info("%s: not in the evaluation folder, so the run does not carry it", path)
            continue
        folder = "/".join(["evaluation", model_id, *Path(name).parent.parts])
        mlflow.log_artifact(str(path), artifact_path=folder)
        logged.append(f"{folder}/{path.name}")
    return logged


def log_onnx(model_id: str, onnx_file: str | Path, *, tracking_uri: str | None) -> str:
    """Log the export folder of ``onnx_file`` (the file and its ``export.json``, nothing else)
    as ``onnx/`` of the logged model ``model_id``, tag the model with the file's path there and
    return that path."""
    from inpnet.registry.store import client

    onnx_file = Path(onnx_file)
    c = client(tracking_uri)
    c.log_model_artifacts(model_id, str(onnx_file.parent), ONNX_DIR)
    where = f"{ONNX_DIR}/{onnx_file.name}"
    c.set_logged_model_tags(model_id, {ONNX_TAG: where})
    log.info("logged the ONNX export %s as %s of model %s", onnx_file, where, model_id)
    return where


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
