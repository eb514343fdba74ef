"""Training on shards in object storage: `inpnet train --shards s3://...` against a real S3
API server (moto on 127.0.0.1) trains exactly as on the local copy of the same split, in one
process and on 2 torchrun ranks that share no file system with the shards; the run's MLflow
record names the manifest on S3 and its hash; a wrong prefix is an error naming the URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.s3 import S3Server, forget_s3_clients, moto_server, use_s3
from helpers.train import torchrun_standalone, train_args, write_params, write_shards

from inpnet.registry.tracking import file_sha256
from inpnet.train.checkpoint import load_model, read_meta

pytestmark = pytest.mark.slow
STEPS = ("--max-steps", "3")


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local training split of 16 samples in 4 shards, as the shard stage writes it."""
    return write_shards(tmp_path_factory.mktemp("train-remote"))


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with moto_server() as s3:
        yield s3


@pytest.fixture
def remote(server: S3Server, local: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``s3://<new bucket>/shards/train``: the local split, manifest included; this process's S3
    clients point at the server for the test."""
    use_s3(server, monkeypatch)
    bucket = server.bucket()
    server.upload(local, bucket, "shards/train")
    yield f"s3://{bucket}/shards/train"
    forget_s3_clients()


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(ckpt)
    return model.state_dict()


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_training_on_s3_shards_equals_training_on_the_local_copy(local: Path, remote: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from inpnet.cli import main

    params = write_params(tmp_path / "params.yaml", batch_size=2, num_workers=0, checkpoint_every=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(train_args(params, remote, tmp_path / "s3", *STEPS, "--tracking-uri", uri)) == 0
    assert main(train_args(params, str(local), tmp_path / "local", *STEPS, "--no-mlflow")) == 0
    assert read_meta(tmp_path / "s3" / "inpnet_tiny")["step"] == 3
    _same_weights(tmp_path / "s3" / "inpnet_tiny", tmp_path / "local" / "inpnet_tiny")

    # the run records the manifest it trained on: its hash (the local copy's bytes) and its URL
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("inpnet").experiment_id])
    assert run.data.tags["shard_manifest_sha256"] == file_sha256(local / "manifest.json")
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert "train-shards" in inputs and f"{remote}/manifest.json" in inputs["train-shards"].source


def test_two_ranks_read_their_shards_from_s3_as_from_local_files(
    server: S3Server, local: Path, remote: str, tmp_path: Path
) -> None:
    """Ranks that share no file system with the shards (each streams its half from S3) train
    the weights two ranks on the local split train."""
    params = write_params(tmp_path / "params.yaml", batch_size=2, num_workers=0, checkpoint_every=2)
    env = {**os.environ, **server.env(home=tmp_path), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name, shards in (("s3", remote), ("local", str(local))):
        proc = torchrun_standalone(
            train_args(params, shards, tmp_path / name, *STEPS, "--no-mlflow"), env=env, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert read_meta(tmp_path / name / "inpnet_tiny")["world_size"] == 2
    _same_weights(tmp_path / "s3" / "inpnet_tiny", tmp_path / "local" / "inpnet_tiny")


def test_a_prefix_without_shards_is_an_error_naming_the_manifest_url(
    remote: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from inpnet.cli import main

    params = write_params(tmp_path / "params.yaml", batch_size=2, num_workers=0)
    wrong = remote.replace("/shards/train", "/shards/nope")
    assert main(train_args(params, wrong, tmp_path / "models", *STEPS, "--no-mlflow")) != 0
    assert f"{wrong}/manifest.json: no shard manifest" in capsys.readouterr().err
    assert not (tmp_path / "models" / "inpnet_tiny").exists()
