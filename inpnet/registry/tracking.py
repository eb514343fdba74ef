"""MLflow run tracking for training: params, metrics, sample images, tags, system metrics,
the datasets it read and the trained model (a logged model of the run).

Only run tracking lives here (the model registry is elsewhere in this package). The
trainer talks to a :class:`RunTracker`; on ranks other than zero, or with tracking turned
off, it gets a :class:`NullTracker` whose methods do nothing, so the training loop has no
rank checks of its own. The tracking URI is always passed in; it is MLflow's global URI
only while the run is active (system metrics and logged models need the fluent API).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from inpnet.config import RegistryConfig

log = logging.getLogger(__name__)

__all__ = [
    "NullTracker",
    "RunTracker",
    "TrackingTarget",
    "file_sha256",
    "flatten_params",
    "git_commit",
    "start_tracking",
]


@dataclass(frozen=True)
class TrackingTarget:
    """Where a training run is tracked: resolved by the entry point from ``registry``."""

    tracking_uri: str
    experiment: str
    system_metrics: bool = True

    @classmethod
    def from_registry(cls, registry: RegistryConfig, explicit_uri: str | None = None) -> TrackingTarget:
        """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``registry.tracking_uri``."""
        from inpnet.config import resolve_tracking_uri

        return cls(tracking_uri=resolve_tracking_uri(registry, explicit_uri), experiment=registry.experiment)


_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": "0.001"}``; lists and tuples as JSON-ish text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
        else:
            text = str(value)
            out[name] = text if len(text) <= _MAX_PARAM_CHARS else text[: _MAX_PARAM_CHARS - 3] + "..."
    return out


def git_commit(cwd: str | Path = ".") -> str | None:
    """HEAD's commit hash (with ``-dirty`` when the tree has changes), or None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a file's bytes, or None when it does not exist (e.g. the shard manifest)."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(manifest: str | Path) -> str | None:
    """sha256 of a shard manifest, a local file or a URL (``s3://.../manifest.json``, read
    from the store); None when there is none."""
    from inpnet.data.urls import is_url, read_url

    if isinstance(manifest, str) and is_url(manifest):
        try:
            return hashlib.sha256(read_url(manifest)).hexdigest()
        except FileNotFoundError:
            return None
    return file_sha256(manifest)


def shards_manifest(shards: str | Path) -> str | Path | None:
    """Where the manifest of training shards is: ``<split folder>/manifest.json``, or the
    manifest.json of a URL spec (None for ``pipe:`` shards, which have none)."""
    from inpnet.data.urls import is_url, manifest_url

    if isinstance(shards, str) and is_url(shards):
        return manifest_url(shards)
    return Path(shards) / "manifest.json"


class NullTracker:
    """Tracking turned off (or a non-zero rank): every call is a no-op."""

    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_datasets(self, manifests: Mapping[str, tuple[str | Path, str]]) -> None:
        pass

    def log_model(self, ckpt_dir: str | Path) -> str | None:
        return None

    def end(self, status: str = "FINISHED") -> None:
        pass


class RunTracker(NullTracker):
    """One MLflow run, active in MLflow's fluent API (as ``log_system_metrics`` needs) from
    :func:`start_tracking` until :meth:`end`, which restores the tracking URI it found."""

    def __init__(self, client: Any, run_id: str, previous_uri: str) -> None:
        self.client = client
        self.run_id = run_id
        self._previous_uri = previous_uri

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        batch = [Metric(key=k, value=float(v), timestamp=now, step=step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """Log an (H, W, 3) uint8 image as a stepped image series (shown in the MLflow UI)."""
        self.client.log_image(self.run_id, image, key=key, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_datasets(self, manifests: Mapping[str, tuple[str | Path, str]]) -> None:
        """``{context: (manifest, dataset name)}`` as inputs of the run (absent manifests skipped)."""
        from inpnet.registry.lineage import log_dataset

        for context, (manifest, name) in manifests.items():
            log_dataset(manifest, name, context)

    def log_model(self, ckpt_dir: str | Path) -> str | None:
        """Log the checkpoint as a logged model of this run; returns its model id, or None when
        the store refused it (the checkpoint is saved; register logs the model in this run then)."""
        from inpnet.registry.lineage import log_checkpoint_model

        try:
            return str(log_checkpoint_model(ckpt_dir).model_id)
        except Exception as err:  # noqa: BLE001 - a finished training must not fail on the store
            log.warning(
                "could not log %s as a model of run %s (%s); `inpnet register` will", ckpt_dir, self.run_id, err
            )
            return None

    def end(self, status: str = "FINISHED") -> None:
        import mlflow

        mlflow.end_run(status)
        mlflow.set_tracking_uri(self._previous_uri)


def start_tracking(
    *,
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str | None],
    resume_run_id: str | None = None,
    system_metrics: bool = True,
    enabled: bool = True,
) -> NullTracker:
    """Start (or reopen, on resume) an MLflow run and record the resolved config as params.

    The run is MLflow's active run until :meth:`RunTracker.end` (the tracking URI is set for
    that time and restored afterwards).

    Args:
        params: nested config, flattened to dotted keys.
        tags: e.g. ``git_commit`` and ``shard_manifest_sha256``; None values are skipped.
        resume_run_id: reopen this run instead of creating one (its params are not re-logged).
        system_metrics: ``mlflow.start_run(log_system_metrics=...)``: CPU/GPU/memory sampled
            in a background thread (needs psutil).
        enabled: False (tracking off, or a non-zero rank) returns a :class:`NullTracker`.
    """
    if not enabled:
        return NullTracker()
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    tag_values = {k: str(v) for k, v in tags.items() if v is not None}
    if system_metrics and not _has_psutil():
        log.info("psutil not installed: no system metrics")
        system_metrics = False
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    run = None
    if resume_run_id:
        try:
            client.get_run(resume_run_id)
            run = mlflow.start_run(run_id=resume_run_id, log_system_metrics=system_metrics)
            mlflow.set_tags(tag_values)
        except Exception as err:  # noqa: BLE001 - the store may have been reset since the checkpoint
            log.warning("cannot reopen MLflow run %s (%s); starting a new run", resume_run_id, err)
    if run is None:
        run = mlflow.start_run(
            experiment_id=exp_id, run_name=run_name, tags=tag_values, log_system_metrics=system_metrics
        )
        from mlflow.entities import Param

        flat = [Param(k, v) for k, v in sorted(flatten_params(params).items())]
        for i in range(0, len(flat), 100):  # log_batch accepts at most 100 params per call
            client.log_batch(run.info.run_id, params=flat[i : i + 100])
    log.info("MLflow run %s in experiment %r at %s", run.info.run_id, experiment, tracking_uri)
    return RunTracker(client, run.info.run_id, previous)


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401  (mlflow's CPU monitor needs it)
    except ImportError:
        return False
    return True
