"""Object-aware training masks: instance maps, exclusion of covered objects, the sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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
