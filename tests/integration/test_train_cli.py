"""`inpnet train` end to end on real shards: CLI, SIGTERM saves a checkpoint, torchrun with 2 ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.train import torchrun_standalone, train_args, write_params, write_shards

from inpnet.train.checkpoint import load_model, load_state, read_meta

ENTRY = Path(__file__).resolve().parents[1] / "helpers" / "train_entry.py"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("train_cli"))


def _env() -> dict[str, str]:
    # one intra-op thread per process: ranks share 2 cores, and OpenMP spin-waits otherwise
    return {**os.environ, "OMP_NUM_THREADS": "1", "INPNET_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}


def test_cli_trains_and_resumes_on_real_shards(shards: Path, tmp_path: Path) -> None:
    from inpnet.cli import main

    params = write_params(tmp_path / "params.yaml", batch_size=2, checkpoint_every=2)
    args = train_args(params, shards.parent, tmp_path / "models", "--no-mlflow")
    assert main([*args, "--max-steps", "3"]) == 0
    ckpt = tmp_path / "models" / "inpnet_tiny"
    assert read_meta(ckpt)["step"] == 3
    assert main([*args, "--max-steps", "5", "--resume"]) == 0
    assert read_meta(ckpt)["step"] == 5
    _model, variant = load_model(ckpt)
    assert variant.name == "inpnet_tiny"
    assert main(["train", "--variant", "nope", "--params", str(params)]) == 2


def test_sigterm_saves_a_checkpoint_before_exit(shards: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", batch_size=2, max_steps=100_000, checkpoint_every=100_000)
    log_path = tmp_path / "stderr.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ENTRY),
                "train",
                "--variant",
                "inpnet_tiny",
                "--params",
                str(params),
                "--shards",
                str(shards),
                "--out",
                str(tmp_path / "models"),
                "--no-mlflow",
                "--device",
                "cpu",
            ],
            stderr=log_file,
            stdout=subprocess.DEVNULL,
            env=_env(),
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 180
            while "training inpnet_tiny from step 0" not in log_path.read_text():
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "trainer never started"
                time.sleep(0.2)
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    err = log_path.read_text()
    assert rc == 2, err[-3000:]
    assert "SIGTERM" in err and "--resume" in err
    meta = read_meta(tmp_path / "models" / "inpnet_tiny")
    assert 0 < meta["step"] < 100_000 and not meta["finished"]
    assert load_state(tmp_path / "models" / "inpnet_tiny")["step"] == meta["step"]


def test_torchrun_two_cpu_ranks_write_a_loadable_checkpoint(shards: Path, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", batch_size=2, checkpoint_every=2, log_every=1)
    out = tmp_path / "models"
    args = train_args(params, shards, out, "--no-mlflow", "--max-steps", "3")
    proc = torchrun_standalone(args, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    meta = read_meta(out / "inpnet_tiny")
    assert meta["step"] == 3 and meta["world_size"] == 2
    state = load_state(out / "inpnet_tiny")
    assert len(state["ranks"]) == 2 and state["ranks"][0]["mask_rng"] != state["ranks"][1]["mask_rng"]
    model, _ = load_model(out / "inpnet_tiny")
    assert not model.training


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_nodes_through_a_c10d_rendezvous_train_as_one_node_of_two(shards: Path, tmp_path: Path) -> None:
    """Multi-node as the train stage launches it (``torchrun_command`` with ``train.nnodes: 2``):
    two torchrun "nodes" of one rank each meet at a c10d rendezvous on 127.0.0.1 and train the
    same weights as one node with two ranks (same global batch, same data split by rank)."""
    import torch
    from safetensors.torch import load_file

    from inpnet.config import TrainConfig
    from inpnet.stages.train import torchrun_command

    params = write_params(tmp_path / "params.yaml", batch_size=2, checkpoint_every=2, log_every=1)

    def entry(out: Path) -> list[str]:
        args = ["--variant", "inpnet_tiny", "--params", str(params), "--shards", str(shards), "--out", str(out)]
        return [str(ENTRY), "train", *args, "--no-mlflow", "--device", "cpu", "--max-steps", "3"]

    two_nodes = TrainConfig(nnodes=2, nproc_per_node=1, rdzv_endpoint=f"127.0.0.1:{_free_port()}", rdzv_id="test")
    nodes = [
        subprocess.Popen(
            torchrun_command(two_nodes, entry(tmp_path / "nodes")),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
            cwd=tmp_path,
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    one_node = TrainConfig(nnodes=1, nproc_per_node=2)
    single = subprocess.run(
        torchrun_command(one_node, entry(tmp_path / "single")),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert single.returncode == 0, single.stderr[-4000:]

    meta = read_meta(tmp_path / "nodes" / "inpnet_tiny")
    assert meta["step"] == 3 and meta["world_size"] == 2
    a = load_file(tmp_path / "nodes" / "inpnet_tiny" / "model.safetensors")
    b = load_file(tmp_path / "single" / "inpnet_tiny" / "model.safetensors")
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), f"two nodes of one rank differ from one node of two by {worst}"
