"""The shard loader: node/worker split, seeded shuffle, resampling, crops, evaluation order."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from helpers.places_tar import build_train_tar
from PIL import Image

from inpnet.config import ShardConfig
from inpnet.data.jpeg import scaled_request
from inpnet.data.loader import center_box, decode_crop, iter_eval_images, make_loader, shard_urls
from inpnet.data.shard import shard_tar
from inpnet.errors import DataError

N_SAMPLES = 32


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loader")
    places = build_train_tar(root / "raw", n_good=N_SAMPLES, bad=False, sizes=(96, 64))
    out = root / "train"
    shard_tar(places.tar, places.filelist, "train", out, ShardConfig(samples_per_shard=4, shard_multiple=4))
    assert len(shard_urls(out)) == 8
    return out


def _all_keys(shards: Path) -> list[str]:
    return [s["__key__"] for s in wds.WebDataset(shard_urls(shards), shardshuffle=False)]


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


@pytest.mark.slow
def test_two_ranks_two_workers_are_disjoint_and_cover_each_sample_once(shards: Path) -> None:
    seen: list[str] = []
    for rank in range(2):
        loader = make_loader(
            shards, image_size=16, batch_size=3, train=True, num_workers=2, rank=rank, world_size=2, seed=7
        )
        seen += _keys(loader)
    assert len(seen) == N_SAMPLES  # nobody sees a sample twice ...
    assert sorted(seen) == sorted(_all_keys(shards))  # ... and together they see all


def test_worker_split_within_a_rank_is_disjoint(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inpnet.data import loader as loader_mod

    streams = []
    for worker in range(2):
        monkeypatch.setattr(loader_mod, "_worker", lambda w=worker: (w, 2))
        streams.append(set(_keys(make_loader(shards, image_size=16, batch_size=4, train=False, rank=1, world_size=2))))
    assert not streams[0] & streams[1] and len(streams[0] | streams[1]) == N_SAMPLES // 2


def test_shuffle_is_seeded_by_epoch(shards: Path) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        return _keys(
            make_loader(shards, image_size=16, batch_size=8, train=True, seed=seed, epoch=epoch, shuffle_buffer=8)
        )

    first = order(0, 0)
    assert first == order(0, 0)
    assert first != order(0, 1) and first != order(1, 0)
    assert sorted(first) == sorted(order(0, 1)) == sorted(_all_keys(shards))


def test_batches_have_the_contract_shapes_and_labels(shards: Path) -> None:
    labels = {
        s["__key__"]: json.loads(s["json"])["label"] for s in wds.WebDataset(shard_urls(shards), shardshuffle=False)
    }
    batch = next(iter(make_loader(shards, image_size=24, batch_size=5, train=True)))
    assert batch["image"].shape == (5, 3, 24, 24) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
    assert batch["label"].dtype == torch.long
    assert batch["label"].tolist() == [labels[k] for k in batch["key"]]


def test_resampled_mode_is_infinite_and_seeded(shards: Path) -> None:
    def first_keys(seed: int) -> list[str]:
        loader = make_loader(
            shards, image_size=16, batch_size=8, train=True, resampled=True, seed=seed, rank=1, world_size=3
        )
        return [k for batch in itertools.islice(loader, 6) for k in batch["key"]]

    keys = first_keys(3)
    assert len(keys) == 48 > N_SAMPLES  # more than one pass, no StopIteration
    assert keys == first_keys(3) and keys != first_keys(4)


def test_uneven_split_over_ranks_is_an_error(shards: Path) -> None:
    with pytest.raises(DataError, match="do not split evenly over 3 ranks"):
        make_loader(shards, image_size=16, batch_size=2, train=False, rank=0, world_size=3)


def test_eval_images_are_deterministic_centre_crops(shards: Path) -> None:
    first = list(iter_eval_images(shards, image_size=32))
    again = list(iter_eval_images(shards, image_size=32))
    assert [k for k, _ in first] == _all_keys(shards)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, again, strict=True))
    sample = next(iter(wds.WebDataset(shard_urls(shards)[:1], shardshuffle=False)))
    image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")  # 96x64: shortest side 64 -> 32
    w, h = image.size
    expected = np.asarray(image.resize((w // 2, h // 2), Image.BOX))[:, (w // 2 - 32) // 2 :][:, :32] / 255.0
    got = first[0][1].permute(1, 2, 0).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).mean() < 0.03


def test_decode_request_uses_dct_scaling() -> None:
    # a full 512x683 image to 256 px needs only the 1/2-scale decode
    assert scaled_request(512, 683, 512, 512, 256) == (256, 342)
    # a small crop needs more pixels than the output, never more than the image
    assert scaled_request(512, 683, 128, 128, 256) == (512, 683)
    # 400 px crops would allow 5/8, which libjpeg decodes slower than full size: full it is
    assert scaled_request(512, 683, 400, 400, 256) == (512, 683)
    assert scaled_request(512, 683, 400, 400, 64) == (128, 171)
    rng = np.random.default_rng(0)
    small = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((200, 120)).save(buf, "JPEG")
    out = decode_crop(buf.getvalue(), center_box(120, 200), 48)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8


def _hand_made_shard(root: Path, jpeg: bytes, settings: dict) -> Path:
    """A one-sample split folder written without the shard stage's checks (e.g. an older version's)."""
    from inpnet.data.manifest import Manifest, ShardRecord
    from inpnet.data.tarwriter import TarWriter

    root.mkdir(parents=True)
    writer = TarWriter(root / "val-000000.tar", fsync=False)
    writer.add("k0.cls", b"3")
    writer.add("k0.jpg", jpeg)
    writer.add("k0.json", b"{}")
    sha = writer.close()
    size = (root / "val-000000.tar").stat().st_size
    record = ShardRecord(
        index=0,
        name="val-000000.tar",
        member_start=0,
        member_end=1,
        first_member="m",
        last_member="m",
        samples=1,
        bytes=size,
        sha256=sha,
    )
    Manifest(split="val", fingerprint="f", source={}, settings=settings, shards=[record], rejected=[]).write(root)
    return root


def test_decompression_bomb_in_a_shard_is_a_data_error_before_decoding(tmp_path: Path) -> None:
    from helpers.places_tar import claims_size, jpeg_bytes

    good = jpeg_bytes(np.random.default_rng(0), 64, 48)
    bomb = _hand_made_shard(tmp_path / "bomb", claims_size(good, 60000, 60000), {})
    with pytest.raises(
        DataError, match=r"sample 'k0' is unreadable \(JPEG is 60000x60000 \(3600.0 megapixels\), over the limit"
    ):
        list(iter_eval_images(bomb, image_size=16))
    with pytest.raises(DataError, match=r"60000x60000"):
        next(iter(make_loader(bomb, image_size=16, batch_size=1, train=True)))
    # the limit the shards were written with (manifest settings) is the one the loader keeps
    strict = _hand_made_shard(tmp_path / "strict", good, {"max_pixels": 64 * 48 - 1})
    with pytest.raises(DataError, match=r"64x48 .* over the limit of 0.0"):
        list(iter_eval_images(strict, image_size=16))
    assert (
        len(list(iter_eval_images(_hand_made_shard(tmp_path / "ok", good, {"max_pixels": 64 * 48}), image_size=16)))
        == 1
    )


def test_training_batches_carry_the_crop_each_image_was_cut_with(shards: Path) -> None:
    import cv2

    from inpnet.data.loader import Crop

    jpegs = {s["__key__"]: s["jpg"] for s in wds.WebDataset(shard_urls(shards), shardshuffle=False)}
    batch = next(iter(make_loader(shards, image_size=24, batch_size=8, train=True, seed=5)))
    assert batch["crop"].shape == (8, 7) and batch["crop"].dtype == torch.long
    crops = [Crop(*(int(v) for v in row[:6]), bool(row[6])) for row in batch["crop"].tolist()]
    assert any(c.flipped for c in crops) and any(c.height < c.source_height for c in crops)
    for key, crop, image in zip(batch["key"], crops, batch["image"], strict=True):
        again = decode_crop(jpegs[key], crop[:4], 24, fast=True)
        if crop.flipped:
            again = cv2.flip(again, 1)
        assert (crop.source_height, crop.source_width) in {(64, 96), (96, 64)}
        assert torch.equal(image, torch.from_numpy(again).permute(2, 0, 1).float().mul_(1.0 / 255.0)), key
