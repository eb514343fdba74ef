"""The shard loader on object storage: ``s3://`` against a real S3 API server (moto on
127.0.0.1), ``http://`` and ``pipe:``, giving exactly the samples of the local fast path;
missing, truncated and refused shards are errors that name the URL."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.places_tar import build_train_tar
from helpers.range_server import RangeServer, Route
from helpers.s3 import S3Server, forget_s3_clients, moto_server, use_s3

from inpnet.config import ShardConfig
from inpnet.data.loader import iter_eval_images, make_loader, shard_urls
from inpnet.data.shard import shard_tar
from inpnet.errors import DataError

N_SHARDS = 12
BRACES = "train-{000000..000011}.tar"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local split folder of 12 shards of 4 samples, as the shard stage writes it."""
    root = tmp_path_factory.mktemp("remote-loader")
    places = build_train_tar(root / "raw", n_good=4 * N_SHARDS, bad=False, sizes=(96, 64))
    out = root / "train"
    shard_tar(places.tar, places.filelist, "train", out, ShardConfig(samples_per_shard=4, shard_multiple=4))
    assert len(shard_urls(out)) == N_SHARDS
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    with moto_server() as s3:
        yield s3


@pytest.fixture
def s3(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    use_s3(server, monkeypatch)
    yield server
    forget_s3_clients()


@pytest.fixture
def uploaded(s3: S3Server, local: Path) -> str:
    """``s3://<new bucket>/shards/train``: the local split folder, manifest included."""
    bucket = s3.bucket()
    s3.upload(local, bucket, "shards/train")
    return f"s3://{bucket}/shards/train"


def _batches(shards: str | Path, **kw) -> list[tuple[list[str], torch.Tensor]]:
    loader = make_loader(shards, image_size=24, batch_size=5, **kw)
    return [(batch["key"], batch["image"]) for batch in loader]


def _same(a: list[tuple[list[str], torch.Tensor]], b: list[tuple[list[str], torch.Tensor]]) -> None:
    assert [keys for keys, _ in a] == [keys for keys, _ in b]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))


def test_s3_prefix_and_brace_urls_give_the_local_samples_in_the_same_order(local: Path, uploaded: str) -> None:
    train = dict(train=True, seed=3, epoch=1, shuffle_buffer=8)
    expected = _batches(local, **train)
    assert sum(len(keys) for keys, _ in expected) == 4 * N_SHARDS
    for spec in (uploaded, f"{uploaded}/{BRACES}"):
        assert shard_urls(spec) == [f"{uploaded}/train-{i:06d}.tar" for i in range(N_SHARDS)]
        _same(_batches(spec, **train), expected)
    evaluation = list(iter_eval_images(f"{uploaded}/{BRACES}", image_size=32))
    assert [key for key, _ in evaluation] == [key for key, _ in iter_eval_images(local, image_size=32)]


def test_s3_ranks_read_the_same_disjoint_shards_as_local_ones(local: Path, uploaded: str) -> None:
    for rank in range(2):
        kw = dict(train=True, seed=5, rank=rank, world_size=2)
        _same(_batches(uploaded, **kw), _batches(local, **kw))
    with pytest.raises(DataError, match="do not split evenly over 5 ranks"):
        make_loader(uploaded, image_size=16, batch_size=2, train=False, rank=0, world_size=5)


@pytest.mark.slow
def test_s3_in_dataloader_workers_matches_local(local: Path, uploaded: str) -> None:
    # spawn: the workers take this test's environment (a forkserver keeps the one it started with)
    kw = dict(train=True, seed=4, num_workers=2, rank=1, world_size=2, start_method="spawn")
    _same(_batches(uploaded, **kw), _batches(local, **kw))


def test_s3_resampled_stream_matches_local(local: Path, uploaded: str) -> None:
    def first(shards: str | Path) -> list[str]:
        loader = make_loader(
            shards, image_size=16, batch_size=8, train=True, resampled=True, seed=2, rank=1, world_size=2
        )
        return [k for batch in itertools.islice(loader, 7) for k in batch["key"]]

    assert first(uploaded) == first(local)


def test_http_and_pipe_urls_give_the_local_samples(local: Path) -> None:
    expected = [key for key, _ in iter_eval_images(local, image_size=16)]
    with RangeServer() as http:
        for path in local.iterdir():
            http.routes[f"/train/{path.name}"] = Route(path.read_bytes())
        assert [key for key, _ in iter_eval_images(http.url(f"/train/{BRACES}"), image_size=16)] == expected
        assert [key for key, _ in iter_eval_images(http.url("/train"), image_size=16)] == expected
        # a signed URL's query is not part of the shard's name; the manifest is beside it
        http.routes["/train/train-000000.tar?sig=abc"] = http.routes["/train/train-000000.tar"]
        signed = [key for key, _ in iter_eval_images(http.url("/train/train-000000.tar?sig=abc"), image_size=16)]
        assert signed == expected[:4]
        body = http.routes["/train/train-000001.tar"].body
        http.routes["/train/train-000001.tar"] = Route(body, drop_after=[len(body) // 2])  # the connection drops
        with pytest.raises(DataError, match=r"http://127\.0\.0\.1:\d+/train/train-000001\.tar: "):
            list(iter_eval_images(http.url("/train/train-{000001..000002}.tar"), image_size=16))
    piped = f"pipe:cat {local}/{BRACES}"  # no manifest to check against: the tar and exit status only
    assert [key for key, _ in iter_eval_images(piped, image_size=16)] == expected
    with pytest.raises(DataError, match=r"pipe:cat .*missing\.tar: cannot read it.*exit 1"):
        list(iter_eval_images(f"pipe:cat {local}/missing.tar", image_size=16))


def test_a_missing_object_or_manifest_names_the_url(s3: S3Server, local: Path, uploaded: str) -> None:
    bucket = uploaded.split("/")[2]
    s3.client().delete_object(Bucket=bucket, Key="shards/train/train-000004.tar")
    with pytest.raises(DataError, match=rf"{uploaded}/train-000004.tar: no such shard"):
        list(iter_eval_images(uploaded, image_size=16))
    with pytest.raises(DataError, match=rf"s3://{bucket}/elsewhere/manifest.json: no shard manifest"):
        shard_urls(f"s3://{bucket}/elsewhere/{BRACES}")
    with pytest.raises(DataError, match=rf"{uploaded}/train-000099.tar: not listed in {uploaded}/manifest.json"):
        shard_urls(f"{uploaded}/train-000099.tar")


def test_a_truncated_shard_names_the_url(s3: S3Server, local: Path, uploaded: str, tmp_path: Path) -> None:
    bucket = uploaded.split("/")[2]
    data = (local / "train-000001.tar").read_bytes()
    s3.client().put_object(Bucket=bucket, Key="shards/train/train-000001.tar", Body=data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{uploaded}/train-000001.tar: truncated or corrupt tar"):
        list(iter_eval_images(uploaded, image_size=16))
    # cut after a complete member, where tar itself sees nothing wrong: the manifest's size catches it
    last = json.loads((local / "manifest.json").read_text())["shards"][2]
    data = (local / "train-000002.tar").read_bytes()
    s3.client().put_object(Bucket=bucket, Key="shards/train/train-000002.tar", Body=data[:-1024])
    with pytest.raises(
        DataError, match=rf"train-000002.tar: {len(data) - 1024} bytes, the manifest says {last['bytes']}"
    ):
        list(iter_eval_images(f"{uploaded}/train-{{000002..000003}}.tar", image_size=16))


def test_refused_credentials_name_the_url(s3: S3Server, uploaded: str) -> None:
    with s3.enforce_credentials(), pytest.raises(DataError, match=rf"{uploaded}/manifest.json: .*access refused"):
        shard_urls(uploaded)
    spec = f"{uploaded}/train-000000.tar"
    loader = make_loader(spec, image_size=16, batch_size=2, train=False)  # the manifest is read ...
    with s3.enforce_credentials(), pytest.raises(DataError, match=rf"{spec}: access refused"):
        next(iter(loader))  # ... and then the shard is refused


def test_a_url_flattened_by_pathlib_is_explained() -> None:
    with pytest.raises(DataError, match=r"went through pathlib\.Path"):
        shard_urls(Path("s3://bucket/shards/train"))
