"""The CUDA paths: bf16 and fp16 (with a GradScaler) learn what fp32 learns, torch.compile
trains, and torchrun drives the GPU through NCCL. Marked ``gpu``: deselected by default and
skipped without a CUDA device; ``bench/gpu_check.sh`` runs them (``pytest -m gpu``).

The problem and the scores are the CPU parity tests' (tests/helpers/learning.py), so a
figure here compares with one there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.learning import train_and_score

PARITY_DB = 0.5
MARGIN_DB = 2.0
FAMILIES = ["inpnet_tiny", "mae_tiny", "cmgan_tiny"]
ENTRY = Path(__file__).resolve().parents[1] / "helpers" / "train_entry.py"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, float]]:
    cache: dict[tuple[str, str, bool], dict[str, float]] = {}
    root = tmp_path_factory.mktemp("gpu")

    def get(name: str, precision: str, compiled: bool = False) -> dict[str, float]:
        key = (name, precision, compiled)
        if key not in cache:
            out = root / f"{name}-{precision}-{'compiled' if compiled else 'eager'}"
            cache[key] = train_and_score(out, name, precision, device="cuda", compile=compiled)
        return cache[key]

    return get


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", FAMILIES)
def test_cuda_mixed_precision_learns_what_fp32_learns(trained, name: str, precision: str) -> None:
    from inpnet.train.optim import resolve_precision

    prec = resolve_precision(precision, torch.device("cuda"))
    assert prec.needs_scaler is (precision == "fp16")  # fp16 trains through a GradScaler
    fp32, mixed = trained(name, "fp32"), trained(name, precision)
    assert fp32["model"] >= fp32["flat"] + MARGIN_DB, fp32
    assert abs(mixed["model"] - fp32["model"]) <= PARITY_DB, (fp32, mixed)


def test_torch_compile_trains_what_eager_trains(trained) -> None:
    eager, compiled = trained("inpnet_tiny", "bf16"), trained("inpnet_tiny", "bf16", compiled=True)
    assert abs(compiled["model"] - eager["model"]) <= PARITY_DB, (eager, compiled)


def test_torchrun_on_the_gpus_joins_nccl_and_writes_one_checkpoint(tmp_path: Path) -> None:
    """One rank per GPU (NCCL allows no two ranks on one device): DDP with 2 or more GPUs;
    with one GPU, torchrun's single rank on CUDA."""
    from helpers.train import write_params, write_shards

    from inpnet.train.checkpoint import load_model, read_meta

    ranks = min(2, torch.cuda.device_count())
    shards = write_shards(tmp_path / "data")
    params = write_params(tmp_path / "params.yaml", batch_size=4, checkpoint_every=2, log_every=1)
    out = tmp_path / "models"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", str(ENTRY)]
    cmd += ["train", "--variant", "inpnet_tiny", "--params", str(params), "--shards", str(shards)]
    cmd += ["--out", str(out), "--no-mlflow", "--device", "cuda", "--max-steps", "4"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "INPNET_LOG_LEVEL": "INFO"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    meta = read_meta(out / "inpnet_tiny")
    assert meta["step"] == 4 and meta["world_size"] == ranks
    model, _ = load_model(out / "inpnet_tiny")
    assert not model.training
