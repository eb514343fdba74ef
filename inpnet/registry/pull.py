"""Pull a registered model into a self-contained folder that loads without the registry.

The folder is the version's MLflow pyfunc folder (``MLmodel``, the models-from-code file,
``artifacts/`` with weights and config, ``code/inpnet``, requirements) plus
``registry.json``: the name, version, aliases and tags it was pulled with. Load it with
``inpnet.inpaint.load_inpainter(DIR)``, ``mlflow.pyfunc.load_model(DIR)``,
``inpnet inpaint --model DIR`` or ``mlflow models serve -m DIR``.

A version registered with ``registry.export_onnx`` carries its ONNX export under ``onnx/``
(``model.onnx`` + ``export.json``; the version's tag ``onnx`` says so); ``registry.json``
then names it (``"onnx": "onnx/model.onnx"``). ``pull(..., onnx=True)`` fetches that folder
alone (no weights, no code): run it with ``inpnet inpaint --model DIR`` or onnxruntime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from inpnet.errors import DataError, RegistryError
from inpnet.export import MODEL_FILES
from inpnet.registry.lineage import ONNX_DIR
from inpnet.registry.store import download_model, resolve_version

__all__ = ["onnx_path", "pull"]

log = logging.getLogger(__name__)


def pull(uri: str, out_dir: str | Path, *, tracking_uri: str | None, onnx: bool = False) -> Path:
    """Download ``models:/NAME@ALIAS`` (or ``/VERSION``) into ``out_dir`` (new or empty).

    With ``onnx`` only the version's ONNX export (``model.onnx``, ``export.json``). The
    download goes to a temporary sibling first, so a failure leaves ``out_dir`` untouched.

    Raises:
        RegistryError: no such model, alias or version; with ``onnx``, a version without an
            ONNX export.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir}: already exists and is not empty; pass a new folder to --out")
    if onnx:
        onnx_path(uri, tracking_uri=tracking_uri)  # a version without one: refused before any folder is made
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        local, mv = download_model(uri, staging / "model", tracking_uri=tracking_uri, path=ONNX_DIR if onnx else None)
        carried = local / ONNX_DIR / MODEL_FILES["onnx"]
        meta = {
            "uri": uri,
            "name": mv.name,
            "version": str(mv.version),
            "aliases": sorted(getattr(mv, "aliases", []) or []),
            "run_id": mv.run_id,
            "tags": dict(mv.tags),
            "tracking_uri": tracking_uri,
            "onnx": MODEL_FILES["onnx"]
            if onnx
            else (carried.relative_to(local).as_posix() if carried.is_file() else None),
        }
        (local / "registry.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(local, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("pulled %s (%s version %s) into %s", uri, meta["name"], meta["version"], out_dir)
    return out_dir


def onnx_path(uri: str, *, tracking_uri: str | None) -> str:
    """Where the ONNX file of the version ``uri`` lies in its model folder (``onnx/model.onnx``).

    Raises:
        RegistryError: the version carries no ONNX export.
    """
    from inpnet.registry.lineage import ONNX_TAG

    mv = resolve_version(uri, tracking_uri=tracking_uri)
    where = dict(mv.tags).get(ONNX_TAG)
    if not where:
        raise RegistryError(
            f"{uri}: {mv.name!r} version {mv.version} carries no ONNX export (no {ONNX_TAG!r} tag); register it "
            "with registry.export_onnx: true (or `inpnet register --onnx`), or export it yourself with "
            f"`inpnet export --model {uri} --format onnx --out DIR`"
        )
    return str(where)
