"""Pull a registered model into a self-contained folder that loads without the registry.

The folder is the version's MLflow pyfunc folder (``MLmodel``, the models-from-code file,
``artifacts/`` with weights and config, ``code/inpnet``, requirements) plus
``registry.json``: the name, version, aliases and tags it was pulled with. Load it with
``inpnet.inpaint.load_inpainter(DIR)``, ``mlflow.pyfunc.load_model(DIR)``,
``inpnet inpaint --model DIR`` or ``mlflow models serve -m DIR``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from inpnet.errors import DataError
from inpnet.registry.store import download_model

__all__ = ["pull"]

log = logging.getLogger(__name__)


def pull(uri: str, out_dir: str | Path, *, tracking_uri: str | None) -> Path:
    """Download ``models:/NAME@ALIAS`` (or ``/VERSION``) into ``out_dir`` (new or empty).

    The download goes to a temporary sibling first, so a failure leaves ``out_dir`` untouched.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir}: already exists and is not empty; pass a new folder to --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        local, mv = download_model(uri, staging / "model", tracking_uri=tracking_uri)
        meta = {
            "uri": uri,
            "name": mv.name,
            "version": str(mv.version),
            "aliases": sorted(getattr(mv, "aliases", []) or []),
            "run_id": mv.run_id,
            "tags": dict(mv.tags),
            "tracking_uri": tracking_uri,
        }
        (local / "registry.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(local, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("pulled %s (%s version %s) into %s", uri, meta["name"], meta["version"], out_dir)
    return out_dir
