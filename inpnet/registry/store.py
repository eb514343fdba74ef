"""The MLflow model registry as inpnet uses it: the store, version resolution, download.

One registered model name per family (``RegistryConfig.model_names``); versions carry the
aliases ``challenger`` (every new version) and ``champion`` (set only by
:mod:`inpnet.registry.promote`). :func:`resolve_version` turns ``models:/NAME@ALIAS`` or
``models:/NAME/VERSION`` into an MLflow ``ModelVersion`` with a clear error when it does not
exist; :func:`download_model` fetches its pyfunc folder. Registering is
:mod:`inpnet.registry.register`; loading a model for inference is :mod:`inpnet.inpaint`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inpnet.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "RegisteredVersion",
    "client",
    "download_model",
    "init_store",
    "resolve_version",
    "tracking",
]


CHALLENGER = "challenger"
CHAMPION = "champion"
WEIGHTS_FILE = "model.safetensors"  # the artifacts of a registered version
CONFIG_FILE = "config.json"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str


@contextlib.contextmanager
def tracking(tracking_uri: str | None) -> Iterator[None]:
    """Point MLflow's module-level API at ``tracking_uri`` (tracking and registry) for a block."""
    import mlflow

    if tracking_uri is None:
        yield
        return
    before_t, before_r = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before_t)
        mlflow.set_registry_uri(before_r)


def client(tracking_uri: str | None) -> MlflowClient:
    """An ``MlflowClient`` for ``tracking_uri`` (used as the registry URI too)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def init_store(tracking_uri: str | None) -> None:
    """Create or upgrade the store's schema now, in one process.

    A new sqlite store is created (alembic migrations) by whoever touches it first; several
    processes doing that at once race on the schema. Pipelines call this once before
    starting parallel writers (training runs, registrations).
    """
    client(tracking_uri).search_experiments(max_results=1)


def resolve_version(uri: str, *, tracking_uri: str | None) -> ModelVersion:
    """The ``ModelVersion`` that ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` names."""
    from mlflow.exceptions import MlflowException

    m = _MODELS_URI.match(uri)
    if not m:
        raise RegistryError(f"{uri!r} is not a registry URI; use models:/NAME@ALIAS or models:/NAME/VERSION")
    name, alias, version = m["name"], m["alias"], m["version"]
    c = client(tracking_uri)
    try:
        registered = c.get_registered_model(name)
    except MlflowException:
        names = sorted(r.name for r in c.search_registered_models())
        raise RegistryError(
            f"no registered model {name!r} in {tracking_uri or 'the default store'}; registered: {names}"
        ) from None
    try:
        return c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version)
    except MlflowException:
        known = (
            sorted(registered.aliases)
            if alias
            else sorted(v.version for v in c.search_model_versions(f"name='{name}'"))
        )
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise RegistryError(f"{name!r} has no {what}; it has {'aliases' if alias else 'versions'} {known}") from None


def download_model(uri: str, dst: Path, *, tracking_uri: str | None, path: str | None = None) -> tuple[Path, Any]:
    """Download the pyfunc folder of a registered version (or its sub-folder ``path``, e.g.
    ``onnx``) into ``dst`` (must not exist)."""
    import mlflow

    mv = resolve_version(uri, tracking_uri=tracking_uri)
    source = f"models:/{mv.name}/{mv.version}" + (f"/{path}" if path else "")
    with tracking(tracking_uri):
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst))
    return Path(local), mv
