"""Object-aware training masks: instance maps, exclusion of covered objects, the sampler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inpnet.config import TrainMasksConfig
from inpnet.errors import MaskError
from inpnet.masks import MaskMixture
from inpnet.masks.objects import ObjectMaskSampler, exclude_covered_objects, load_instance_map, object_hole


def _labels(size: int = 32) -> np.ndarray:
    """Background 0, a large 'stuff' segment 9 (bottom half), objects 1 (left) and 2 (right)."""
    labels = np.zeros((size, size), np.int64)
    labels[size // 2 :, :] = 9
    labels[2:10, 2:10] = 1
    labels[2:10, 20:28] = 2
    return labels


def _write_maps(folder: Path, n: int = 3, size: int = 32) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(n):
        labels = np.roll(_labels(size), i * 3, axis=1).astype(np.uint16)
        Image.fromarray(labels).save(folder / f"img{i:03d}.png")
        keys.append(f"img{i:03d}")
    return keys


def test_objects_mostly_inside_the_hole_are_excluded() -> None:
    labels = _labels()
    hole = np.zeros_like(labels, bool)
    hole[0:12, 0:9] = True  # covers object 1 at 7/8 of its area
    hole[2:4, 20:28] = True  # covers object 2 at 1/4 of its area
    out = exclude_covered_objects(hole, labels, overlap=0.5, max_area=0.4)
    assert not (out & (labels == 1)).any()  # object 1 left the hole
    assert (out & (labels == 2)).sum() == (hole & (labels == 2)).sum()  # object 2 stays partly covered
    assert out[0, 0] and out[11, 0]  # hole pixels outside objects are kept

    # a segment larger than max_area is background ("stuff"): never excluded
    big = np.zeros_like(hole)
    big[16:, :] = True
    assert (exclude_covered_objects(big, labels, overlap=0.5, max_area=0.4) == big).all()


def test_instance_maps_read_grey_and_panoptic_rgb(tmp_path: Path) -> None:
    labels = _labels(40) * 1000  # ids beyond 8 bits
    Image.fromarray(labels.astype(np.uint16)).save(tmp_path / "grey.png")
    rgb = np.stack([labels % 256, (labels // 256) % 256, labels // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pan.png")
    grey, pan = load_instance_map(tmp_path / "grey.png"), load_instance_map(tmp_path / "pan.png")
    assert (grey == labels).all() and (pan == labels).all()
    small = load_instance_map(tmp_path / "grey.png", size=20)
    assert small.shape == (20, 20) and set(np.unique(small)) <= set(np.unique(labels))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(MaskError, match=r"bad.png"):
        load_instance_map(tmp_path / "bad.png")


def test_object_hole_is_an_object_silhouette() -> None:
    rng = np.random.default_rng(0)
    hole = object_hole(_labels(), 32, rng, max_area=0.4)
    assert 64 <= hole.sum() <= 32 * 32 // 2  # an 8x8 object, dilated a little
    assert not object_hole(np.zeros((32, 32), np.int64), 32, rng).any()


def test_sampler_with_keys_never_covers_most_of_an_object(tmp_path: Path) -> None:
    keys = _write_maps(tmp_path / "seg")
    sampler = ObjectMaskSampler(tmp_path / "seg", object_prob=0.7, min_ratio=0.3, max_ratio=0.6, max_area=0.4)
    batch_keys = [keys[i % len(keys)] for i in range(12)]
    masks = sampler.sample(12, 32, 32, step=0, generator=np.random.default_rng(0), keys=batch_keys)
    assert masks.shape == (12, 1, 32, 32)
    assert set(masks.unique().tolist()) <= {0.0, 1.0} and masks.sum() > 0
    for m, key in zip(masks[:, 0].numpy() > 0.5, batch_keys, strict=True):
        labels = sampler.labels(key, 32)
        for obj in (1, 2):
            inside = labels == obj
            assert (m & inside).sum() <= 0.5 * inside.sum(), f"{key}: object {obj} mostly inside the hole"
    again = sampler.sample(12, 32, 32, step=0, generator=np.random.default_rng(0), keys=batch_keys)
    assert (again == masks).all()  # a pure function of the seeded generator


def test_sampler_without_keys_warns_and_from_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_maps(tmp_path / "seg", n=2)
    cfg = TrainMasksConfig(object_dir=str(tmp_path / "seg"), object_prob=1.0, max_ratio=0.4, warmup_steps=10)
    sampler = ObjectMaskSampler.from_config(cfg)
    assert (
        sampler.current_max_ratio(0)
        < sampler.current_max_ratio(9)
        < sampler.current_max_ratio(10)
        == pytest.approx(0.4)
    )
    mixture = MaskMixture(cfg)  # one warm-up ramp for both training samplers
    assert [sampler.current_max_ratio(s) for s in range(12)] == [mixture.current_max_ratio(s) for s in range(12)]
    with caplog.at_level("WARNING"):
        masks = sampler.sample(4, 32, 32, step=5, generator=np.random.default_rng(1))
    assert "not excluded" in caplog.text
    with caplog.at_level("WARNING"):
        sampler.sample(2, 32, 32, step=5, generator=np.random.default_rng(1), keys=["img000", "nomap"])
    assert "has no map for image 'nomap'" in caplog.text
    assert (masks.flatten(1).sum(1) > 0).all()  # every object hole is non-empty
    with pytest.raises(MaskError, match="object_dir"):
        ObjectMaskSampler.from_config(TrainMasksConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(MaskError, match=r"no .png"):
        ObjectMaskSampler(tmp_path / "empty")


def test_decompression_bomb_instance_map_is_a_mask_error(tmp_path: Path) -> None:
    from helpers.places_tar import claims_size, jpeg_bytes

    from inpnet.masks.objects import load_instance_map

    path = tmp_path / "map.jpg"
    path.write_bytes(claims_size(jpeg_bytes(np.random.default_rng(0), 40, 40), 60000, 60000))
    with pytest.raises(MaskError, match=r"map.jpg: instance map is over the limit of 50.0 megapixels"):
        load_instance_map(path)


# ------------------------------------------------------------- crop alignment, things, rules


def _square_scene(width: int = 120, height: int = 80) -> tuple[bytes, np.ndarray]:
    """A JPEG of a white square (an off-centre 'object') on black, and its segment map (id 5)."""
    import io

    image = np.zeros((height, width, 3), np.uint8)
    labels = np.zeros((height, width), np.int64)
    image[10:40, 70:100] = 255
    labels[10:40, 70:100] = 5
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95)
    return buf.getvalue(), labels


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, float((a | b).sum()))


def test_maps_are_cut_with_the_images_own_random_crop_and_flip() -> None:
    import cv2

    from inpnet.data.loader import _decode
    from inpnet.masks.objects import crop_labels

    jpeg, labels = _square_scene()
    half = cv2.resize(labels.astype(np.int32), (60, 40), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    samples = [{"jpg": jpeg, "cls": b"0", "__key__": f"k{i}"} for i in range(24)]
    decoded = list(_decode(samples, size=32, train=True, seed=3, epoch=0, rank=0, scale=(0.25, 1.0), max_pixels=10**7))
    assert {d["crop"].flipped for d in decoded} == {True, False}
    ious, centre_ious = [], []
    for d in decoded:
        bright = d["image"][0] > 127  # (32, 32): where the object is in the training crop
        for full in (labels, half):  # a map at the JPEG's resolution, or at half of it
            cut = crop_labels(full, d["crop"], 32) == 5
            if bright.sum() > 20:
                ious.append(_iou(cut, bright))
                assert ious[-1] > 0.7, d["crop"]  # a 1 px edge of a 10 px object costs 0.2 of IoU
            else:
                assert cut.sum() <= bright.sum() + 20
        centre = load_instance_map_centre(labels, 32) == 5
        if bright.sum() > 20:
            centre_ious.append(_iou(centre, bright))
    assert np.mean(ious) > 0.85
    assert min(centre_ious) < 0.5  # the old centre-cropped maps missed the object in random crops


def load_instance_map_centre(labels: np.ndarray, size: int) -> np.ndarray:
    from inpnet.masks.objects import _resize_center_crop

    return _resize_center_crop(labels, size)


def test_a_map_of_another_aspect_ratio_is_refused() -> None:
    from inpnet.data.loader import Crop
    from inpnet.masks.objects import crop_labels

    with pytest.raises(MaskError, match=r"seg/k.png: segment map is 50x50 but its image is 120x80"):
        crop_labels(np.zeros((50, 50), np.int64), Crop(0, 0, 80, 80, 80, 120, False), 32, name="seg/k.png")


def test_only_panoptic_things_are_objects(tmp_path: Path) -> None:
    import json

    from inpnet.masks.objects import load_things, object_ids

    labels = _labels()  # 1, 2 objects; 9 the bottom half
    (tmp_path / "m.json").write_text(
        json.dumps({"segments_info": [{"id": 1, "isthing": True}, {"id": 2, "isthing": False}]})
    )
    things = load_things(tmp_path / "m.json")
    assert things == {1}
    assert object_ids(labels, 1.0, things) == [1]  # stuff 2 and 9 are never objects, whatever their size
    assert object_ids(labels, 1.0) == [1, 2, 9]  # no sidecar: an instance map, every id a thing
    hole = np.zeros_like(labels, bool)
    hole[0:12, 0:30] = True  # covers both 1 and 2 entirely
    out = exclude_covered_objects(hole, labels, overlap=0.5, max_area=0.4, things=things)
    assert not (out & (labels == 1)).any() and (out & (labels == 2)).sum() == 64  # stuff stays in the hole
    assert load_things(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text('[{"id": 1}]')
    with pytest.raises(MaskError, match=r"bad.json: not a panoptic segment list"):
        load_things(tmp_path / "bad.json")


def test_excluded_objects_are_dilated_out_of_the_hole() -> None:
    labels = _labels()
    hole = np.zeros_like(labels, bool)
    hole[0:14, 0:14] = True  # object 1 (2:10, 2:10) fully inside, with a margin
    plain = exclude_covered_objects(hole, labels, overlap=0.5, max_area=0.4)
    grown = exclude_covered_objects(hole, labels, overlap=0.5, max_area=0.4, dilation=2)
    assert plain[1, 5] and plain[10, 5]  # the ring next to the object stays in the hole without dilation
    assert not grown[1, 5] and not grown[11, 5] and not grown[5, 0]  # 2 px around the object leave it
    assert grown[12, 5] and grown[0, 0]  # further away, still hole (a cross, not a square)


def test_a_mask_whose_hole_is_almost_nothing_or_everything_is_redrawn(tmp_path: Path) -> None:
    from inpnet.masks import objects

    _write_maps(tmp_path / "seg", n=1)
    sampler = ObjectMaskSampler(tmp_path / "seg", object_prob=0.0)
    draws = iter(
        [np.zeros((32, 32), bool), np.ones((32, 32), bool), np.eye(32, dtype=bool) | np.eye(32, k=1, dtype=bool)]
    )
    calls = []

    def fake_draw(size: int, step: int, rng: np.random.Generator) -> np.ndarray:
        calls.append(step)
        return next(draws)

    sampler._draw = fake_draw  # type: ignore[method-assign]  # a scripted sequence of draws
    hole = sampler.sample_one(32, 0, np.random.default_rng(0))
    assert len(calls) == 3 and 0.05 <= hole.mean() <= 0.95  # empty and full holes were redrawn
    assert objects.MAX_REDRAWS == 6 and objects.HOLE_SHARE_RANGE == (0.05, 0.95)
    always_empty = ObjectMaskSampler(tmp_path / "seg", object_prob=0.0, max_ratio=0.0)
    assert not always_empty.sample_one(32, 0, np.random.default_rng(0)).any()  # bounded: gives up after 6 redraws


def test_masked_batches_hand_the_loaders_crops_to_an_aligning_sampler() -> None:
    from inpnet.data.loader import Crop
    from inpnet.train.batches import BatchStream, MaskedBatches

    crop_rows = torch.tensor([[1, 2, 30, 40, 60, 80, 1], [0, 0, 60, 60, 60, 80, 0]])

    def factory(shards: Path, **_: object) -> Iterator[dict[str, object]]:
        while True:
            yield {"image": torch.zeros(2, 3, 8, 8), "key": ["a", "b"], "crop": crop_rows}

    seen: dict[str, object] = {}

    class Recorder:
        aligns_to_crops = True

        def sample(
            self,
            b: int,
            h: int,
            w: int,
            step: int,
            generator: np.random.Generator,
            keys: list[str] | None = None,
            crops: list[Crop] | None = None,
        ) -> torch.Tensor:
            seen["crops"], seen["keys"] = crops, keys
            return torch.zeros(b, 1, h, w)

    stream = BatchStream(
        Path("."),
        image_size=8,
        batch_size=2,
        num_workers=0,
        rank=0,
        world_size=1,
        seed=0,
        resampled=False,
        factory=factory,
    )
    batches = MaskedBatches(stream, Recorder(), np.random.default_rng(0), 1)
    try:
        batches.take(0, prefetch=False)
    finally:
        batches.close()
    assert seen["keys"] == ["a", "b"]
    assert seen["crops"] == [Crop(1, 2, 30, 40, 60, 80, True), Crop(0, 0, 60, 60, 60, 80, False)]


def test_object_aware_variants_use_the_folder_when_given_and_say_so_when_not(tmp_path: Path) -> None:
    from helpers.params import params_for_tests

    from inpnet.masks.objects import ObjectMaskSampler as Sampler
    from inpnet.train.trainer import _make_masks, run_notes

    params = params_for_tests()
    for name in ("cmgan_b", "cmgan_b512"):
        assert params.variant(name).train.masks.object_aware
    cmgan_b = params.variant("cmgan_b")
    assert run_notes(cmgan_b, 1)["object_masks"].startswith("off: train.masks.object_dir is not set")
    assert isinstance(_make_masks(cmgan_b), MaskMixture)
    _write_maps(tmp_path / "seg", n=2)
    masks = cmgan_b.train.masks.model_copy(update={"object_dir": str(tmp_path / "seg")})
    given = cmgan_b.model_copy(update={"train": cmgan_b.train.model_copy(update={"masks": masks})})
    assert isinstance(_make_masks(given), Sampler)
    assert run_notes(given, 1)["object_masks"] == f"on: {tmp_path / 'seg'}"
    quick = params.variant("cmgan_s")  # the quickstart's: not object-aware, even with a folder given
    masks = quick.train.masks.model_copy(update={"object_dir": str(tmp_path / "seg")})
    quick = quick.model_copy(update={"train": quick.train.model_copy(update={"masks": masks})})
    assert isinstance(_make_masks(quick), MaskMixture) and "object_masks" not in run_notes(quick, 1)


@pytest.mark.slow
def test_an_object_aware_run_trains_on_real_shards_with_aligned_maps(tmp_path: Path) -> None:
    """The real loader's crops reach the sampler through the trainer's mask thread, every map is
    cut with its image's box, and the run records that the masks were object-aware."""
    import webdataset as wds
    from helpers.train import tiny_variant, write_shards

    from inpnet.data.loader import Crop, jpeg_size, shard_urls
    from inpnet.masks import objects
    from inpnet.train.checkpoint import read_meta
    from inpnet.train.trainer import train

    split = write_shards(tmp_path, n=16)
    maps = tmp_path / "maps"
    maps.mkdir()
    for s in wds.WebDataset(shard_urls(split), shardshuffle=False):
        h, w = jpeg_size(s["jpg"])
        labels = np.zeros((2 * h, 2 * w), np.uint16)  # maps at twice the JPEG's resolution
        labels[h // 2 : h, w // 2 : w] = 7
        Image.fromarray(labels).save(maps / f"{s['__key__']}.png")
    cut: list[tuple[str, object]] = []
    real_crop_labels = objects.crop_labels

    def recording(labels: np.ndarray, crop: Crop, size: int, *, name: str = "map") -> np.ndarray:
        cut.append((name, crop))
        return real_crop_labels(labels, crop, size, name=name)

    v = tiny_variant(
        "cmgan_tiny",
        max_steps=2,
        precision="fp32",
        masks={"object_aware": True, "object_dir": str(maps), "object_prob": 0.5, "max_ratio": 0.5},
    )
    import unittest.mock

    with unittest.mock.patch.object(objects, "crop_labels", recording):
        ckpt_dir = train(v, shards=split, out_dir=tmp_path / "models", device="cpu")
    meta = read_meta(ckpt_dir)
    assert meta["finished"] and meta["notes"]["object_masks"] == f"on: {maps}"
    assert len(cut) >= 2 * v.train.batch_size and all(crop is not None for _, crop in cut)
