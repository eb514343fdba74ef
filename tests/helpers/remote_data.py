"""A Places365 mirror for the pipeline tests: the three files (tiny, valid layout) and the
params that point ``data`` at a local server, plus editing a test repository's params."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from helpers.pipeline import _git, write_params
from helpers.places_tar import build_train_tar, build_val_tar, filelist_tar


def set_params(repo: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to ``repo``'s params.yaml and commit it."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    change(params)
    write_params(repo / "params.yaml", params)
    _git(["commit", "-q", "-am", "test params"], repo)


def places365_files(root: Path) -> dict[str, bytes]:
    """The three Places365 files (tiny, valid layout) by file name."""
    train, val = build_train_tar(root, n_good=24, bad=False), build_val_tar(root, n=8)
    listing = filelist_tar(root, train.filelist, val.filelist)
    return {p.name: p.read_bytes() for p in (train.tar, val.tar, listing)}


def use_server(params: dict[str, Any], base_url: str, files: dict[str, bytes], *, md5: bool = True) -> None:
    """Point ``data`` at ``base_url`` (a mirror), with the files' md5 when ``md5``."""
    fetch = params["data"]["fetch"]
    params["data"]["source"] = "places365"
    fetch["url_base"] = base_url
    fetch["backoff_s"] = 0.1
    for part in ("train", "val", "filelist"):
        fetch[part]["md5"] = (
            hashlib.md5(files[fetch[part]["filename"]], usedforsecurity=False).hexdigest() if md5 else None
        )
