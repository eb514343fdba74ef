"""Object storage against a real S3 API server (moto on 127.0.0.1): a DVC remote on S3
restores shards and a model folder in a fresh clone byte for byte, and an ``mlflow server``
whose artifacts live in S3 serves registered models back through ``models:/``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.pipeline import _git, pipeline_env, run_dvc
from helpers.places_tar import build_train_tar
from helpers.registry import image_and_mask, make_checkpoint, mlflow_server, write_metrics
from helpers.s3 import S3Server, moto_server

from inpnet.config import ShardConfig
from inpnet.data.shard import shard_tar

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with moto_server() as s3:
        yield s3


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -------------------------------------------------------------------------- DVC remote


def test_dvc_push_then_pull_in_a_fresh_clone_restores_shards_and_models(server: S3Server, tmp_path: Path) -> None:
    repo, clone = tmp_path / "repo", tmp_path / "clone"
    repo.mkdir()
    env = {**pipeline_env(None, tmp_path / "homes"), **server.env(home=tmp_path)}
    _git(["init", "-q", "-b", "main"], repo)
    run_dvc(["init", "-q"], repo, env)
    places = build_train_tar(tmp_path / "raw", n_good=16, bad=False)
    shard_tar(
        places.tar, places.filelist, "train", repo / "data" / "shards" / "train", ShardConfig(samples_per_shard=4)
    )
    make_checkpoint(repo / "models" / "inpnet_tiny")
    tracked = {
        "data/shards": _files(repo / "data" / "shards"),
        "models/inpnet_tiny": _files(repo / "models" / "inpnet_tiny"),
    }
    assert len(tracked["data/shards"]) == 5 and tracked["models/inpnet_tiny"]  # 4 shards + manifest.json

    bucket = server.bucket()
    run_dvc(["add", *tracked], repo, env)
    run_dvc(["remote", "add", "-d", "s3", f"s3://{bucket}/dvc"], repo, env)
    run_dvc(["remote", "modify", "s3", "endpointurl", server.endpoint], repo, env)
    _git(["add", "-A"], repo)
    _git(["commit", "-q", "-m", "shards and a model, tracked by DVC"], repo)
    run_dvc(["push"], repo, env)
    pushed = server.keys(bucket, "dvc/")
    files = sum(len(f) for f in tracked.values())
    assert len(pushed) >= files, f"{len(pushed)} objects in s3://{bucket}/dvc/ for {files} files"

    _git(["clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "data" / "shards").exists()  # git has only the .dvc files
    run_dvc(["pull"], clone, env)
    for path, contents in tracked.items():
        assert _files(clone / path) == contents, f"{path} differs after dvc pull"


# ------------------------------------------------------------ MLflow artifacts on S3


@pytest.fixture(scope="module")
def mlflow_on_s3(server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``mlflow server`` on 127.0.0.1 whose artifacts go to ``s3://<bucket>/mlflow`` on moto:
    (tracking URI, bucket). Clients upload and download through the server's artifact proxy."""
    root = tmp_path_factory.mktemp("mlflow-s3")
    bucket = server.bucket()
    with mlflow_server(root, tmp_path_factory, artifacts=f"s3://{bucket}/mlflow", env=server.env(home=root)) as url:
        yield url, bucket


def test_registered_model_lives_in_s3_and_loads_through_models_uri(
    server: S3Server, mlflow_on_s3: tuple[str, str], tmp_path: Path
) -> None:
    from inpnet.inpaint import inpaint_image, load_inpainter
    from inpnet.registry.pull import pull
    from inpnet.registry.register import register
    from inpnet.registry.store import WEIGHTS_FILE

    uri, bucket = mlflow_on_s3
    name = f"inpnet-s3-{uuid.uuid4().hex[:8]}"
    ckpt = make_checkpoint(tmp_path / "ckpt")
    metrics = write_metrics(tmp_path / "eval" / "metrics.json", 20.0, {"center": 20.0}, checkpoint=ckpt)
    version = register(ckpt, metrics, tracking_uri=uri, name=name)

    keys = server.keys(bucket, "mlflow/")
    weights = [k for k in keys if k.endswith(f"/{WEIGHTS_FILE}")]
    assert [k for k in keys if k.endswith("/MLmodel")] and weights, f"no model in s3://{bucket}/mlflow/: {keys[:20]}"

    inpainter, info = load_inpainter(f"models:/{name}@challenger", tracking_uri=uri)
    assert info["name"] == name and info["version"] == version.version
    image, hole = image_and_mask(40, 56)
    assert np.array_equal(inpaint_image(inpainter, image, hole)[~hole], image[~hole])

    pulled = pull(f"models:/{name}@challenger", tmp_path / "pulled", tracking_uri=uri)
    local = list(pulled.rglob(WEIGHTS_FILE))
    stored = server.client().get_object(Bucket=bucket, Key=weights[0])["Body"].read()
    assert len(local) == 1 and local[0].read_bytes() == stored
