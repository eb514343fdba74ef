"""Helpers for the registry, inpaint and serving tests: tiny checkpoints, metrics, PNG payloads.

``build_model`` comes from :mod:`inpnet.models.build` when that exists; until then a small
convolutional stand-in is installed in-process (subprocess tests skip without the real one).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inpnet.config import ResolvedVariant

REPO_ROOT = Path(__file__).resolve().parents[2]


class StandIn(nn.Module):
    """A fixed-grid stand-in: complains unless it sees exactly ``grid`` x ``grid`` inputs."""

    def __init__(self, grid: int = 32) -> None:
        super().__init__()
        self.grid = grid
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from inpnet.models.composite import masked_input

        assert image.shape[-2:] == (self.grid, self.grid), f"model got {tuple(image.shape)}, grid is {self.grid}"
        return torch.sigmoid(self.body(torch.cat([masked_input(image, mask), mask], 1)))


def real_build_available() -> bool:
    try:
        from inpnet.models import build

        return not getattr(build, "IS_STAND_IN", False)
    except ImportError:
        return False


def ensure_build_model() -> None:
    """Install a stand-in ``inpnet.models.build`` while the real one does not exist yet."""
    if real_build_available():
        return
    m = types.ModuleType("inpnet.models.build")
    m.IS_STAND_IN = True
    m.build_model = lambda cfg: StandIn(cfg.img_size)
    sys.modules["inpnet.models.build"] = m


def tiny_variant(name: str = "inpnet_tiny") -> ResolvedVariant:
    from helpers.params import tiny_variant as resolved

    return resolved(name)


def make_checkpoint(out: Path, *, variant: str = "inpnet_tiny", seed: int = 0) -> Path:
    """A complete checkpoint folder (trainer layout) with seeded random weights."""
    ensure_build_model()
    from inpnet.models.build import build_model
    from inpnet.train.checkpoint import save_checkpoint

    v = tiny_variant(variant)
    torch.manual_seed(seed)  # test-only: model init has no generator argument
    model = build_model(v.model).eval()
    return save_checkpoint(out, variant=v, modules={"model": model}, state={"step": 1}, meta={"step": 1})


def write_metrics(
    path: Path, psnr: float, patterns: dict[str, float], *, checkpoint: Path | None = None, bank: Path | None = None
) -> Path:
    """An evaluator-shaped metrics.json, and with ``checkpoint`` a report.json that says it
    scored that checkpoint's weights (on ``bank``, when given), as register requires."""
    from inpnet.registry.tracking import file_sha256
    from inpnet.train.checkpoint import load_model, weights_sha256

    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {
        "overall": {"psnr": psnr, "ssim": 0.5, "fid": None, "n": 8, "excluded": 0},
        "patterns": {p: {"psnr": v, "ssim": 0.5, "n": 4} for p, v in patterns.items()},
        "buckets": {},
    }
    path.write_text(json.dumps(metrics))
    if checkpoint is not None:
        model, variant = load_model(checkpoint)
        report = {
            "method": variant.name,
            "method_settings": {"kind": "model", "weights_sha256": weights_sha256(model)},
            "masks": {"source": str(bank), "kind": "bank", "manifest_sha256": file_sha256(bank / "manifest.json")}
            if bank
            else {"source": "masks", "kind": "folder", "manifest_sha256": None},
        }
        path.with_name("report.json").write_text(json.dumps(report))
    return path


def png_b64(array: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_b64_png(text: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def image_and_mask(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) bool mask with a rectangular hole, True = hole."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    hole = np.zeros((height, width), dtype=bool)
    hole[height // 4 : height // 2, width // 3 : 2 * width // 3] = True
    return image, hole


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers 200; fail early if ``proc`` exits."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started with ``start_new_session=True`` (its whole process group)."""
    import os
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def migrated_copy(tracking_uri: str, dst: Path) -> Path:
    """A consistent copy of a sqlite store whose schema is already up to date.

    Creating a store runs every schema migration (seconds here); a copy of the session's
    store skips that and means no two processes ever migrate one file at once.
    """
    import sqlite3

    from inpnet.registry.store import init_store

    init_store(tracking_uri)
    src = sqlite3.connect(tracking_uri.removeprefix("sqlite:///"))
    with sqlite3.connect(dst) as target:
        src.backup(target)
    src.close()
    return dst


def subprocess_env(tmp_path_factory: Any) -> dict[str, str]:
    """Environment for server subprocesses: bytecode cached in the session's temp dir.

    With PYTHONDONTWRITEBYTECODE every MLflow process (a server and its worker) compiles
    MLflow from source again; a shared cache prefix lets the later ones reuse it.
    """
    import os
    import sys

    prefix = Path(tmp_path_factory.getbasetemp()) / "pycache"
    path = (
        f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the servers' own scripts (uvicorn)
    )
    return {
        **os.environ,
        "PATH": path,
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(prefix),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


@contextlib.contextmanager
def mlflow_process(
    args: list[str],
    root: Path,
    tmp_path_factory: Any,
    *,
    health: str,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> Iterator[str]:
    """``python -m mlflow ARGS`` on 127.0.0.1, a free port and one worker, in ``root`` (its
    stderr in ``root/<first arg>.log``); yields its URL once ``health`` answers, stops its
    process group on exit. ``env`` is added to the server's environment."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", *args, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with (root / f"{args[0]}.log").open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            env={**subprocess_env(tmp_path_factory), **(env or {})},
        )
        try:
            wait_http(f"http://127.0.0.1:{port}{health}", proc, timeout=timeout)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)


@contextlib.contextmanager
def mlflow_server(
    root: Path, tmp_path_factory: Any, *, artifacts: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """``mlflow server`` on a copy of the session's sqlite store (schema already migrated), its
    artifacts proxied to ``artifacts`` (a folder or an ``s3://`` URL); yields its URL."""
    import os

    backend = f"sqlite:///{migrated_copy(os.environ['MLFLOW_TRACKING_URI'], root / 'server.db')}"
    args = ["server", "--backend-store-uri", backend, "--artifacts-destination", artifacts]
    # the job runner starts several huey consumers: minutes of start-up on two cores
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    with mlflow_process(args, root, tmp_path_factory, health="/health", env=env) as url:
        yield url


def as_records(**columns: Any) -> dict[str, Any]:
    return {
        "dataframe_records": [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    }
