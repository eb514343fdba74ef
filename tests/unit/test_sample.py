"""The embedded sample: official names and layout, consistent labels, same bytes every run."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from inpnet.cli import main
from inpnet.config import SampleConfig, load_params
from inpnet.data.sample import SAMPLE_CATEGORIES, SAMPLE_FILES, split_photos, write_sample

CFG = SampleConfig()
TRAIN_CATS = [c for c in SAMPLE_CATEGORIES if c.split == "train"]
VAL_CATS = [c for c in SAMPLE_CATEGORIES if c.split == "val"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample(tmp_path_factory.mktemp("sample"), CFG)


def _lists(filelist: Path) -> dict[str, list[str]]:
    with tarfile.open(filelist) as tar:
        return {m.name: tar.extractfile(m).read().decode("ascii").splitlines() for m in tar.getmembers()}


def _files(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_official_names_and_sizes(sample):
    assert {k: p.name for k, p in sample.items()} == SAMPLE_FILES
    total = sum(p.stat().st_size for p in sample.values())
    assert 500_000 < total < 6_000_000, total  # a few MB: the CI quickstart


def test_two_runs_are_byte_identical(sample, tmp_path):
    again = write_sample(tmp_path, CFG)
    for key, path in sample.items():
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(again[key].read_bytes()).digest(), key
    other = write_sample(
        tmp_path / "seed1", CFG.model_copy(update={"seed": 1, "train_per_category": 2, "val_per_category": 1})
    )
    assert (
        _files(other["val"])["val_large/Places365_val_00000001.jpg"]
        != _files(sample["val"])["val_large/Places365_val_00000001.jpg"]
    )


def test_tar_headers_are_fixed_and_plain(sample):
    with tarfile.open(sample["train"], "r:") as tar:  # "r:" fails on compressed input
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid) for m in members} == {(members[0].mtime, 0, 0)}
    assert isinstance(members[0].mtime, int) and not any(m.pax_headers for m in members)
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert {m.name for m in members if m.isdir()} >= {"data_large", "data_large/g/garage", "data_large/g/garage/indoor"}


def test_file_lists_match_tar_members_and_labels(sample):
    lists = _lists(sample["filelist"])
    assert sorted(lists) == ["categories_places365.txt", "places365_train_standard.txt", "places365_val.txt"]
    categories = dict(line.rsplit(" ", 1) for line in lists["categories_places365.txt"])
    assert list(categories) == [c.path for c in SAMPLE_CATEGORIES] == sorted(categories)
    assert [int(v) for v in categories.values()] == list(range(len(SAMPLE_CATEGORIES)))
    assert all(re.fullmatch(r"/[a-z]/[a-z_]+(/[a-z_]+)? \d+", line) for line in lists["categories_places365.txt"])

    train = _files(sample["train"])
    train_lines = lists["places365_train_standard.txt"]
    assert len(train_lines) == len(train) == CFG.train_per_category * len(TRAIN_CATS)
    for line in train_lines:
        path, label = line.split(" ")
        assert re.fullmatch(r"(/[a-z]/[a-z_]+(?:/[a-z_]+)?)/\d{8}\.jpg", path)
        assert "data_large" + path in train
        assert categories[path.rsplit("/", 1)[0]] == label  # label agrees with the folder

    val = _files(sample["val"])
    val_lines = lists["places365_val.txt"]
    assert len(val_lines) == len(val) == CFG.val_per_category * len(VAL_CATS)
    assert [line.split(" ")[0] for line in val_lines] == [f"Places365_val_{i:08d}.jpg" for i in range(1, len(val) + 1)]
    assert {"val_large/" + line.split(" ")[0] for line in val_lines} == set(val)
    labels = [int(line.split(" ")[1]) for line in val_lines]
    val_labels = [i for i, c in enumerate(SAMPLE_CATEGORIES) if c.split == "val"]
    assert sorted(labels) == sorted(val_labels * CFG.val_per_category)
    assert labels != sorted(labels)  # interleaved like the official val set


def test_images_decode_with_the_right_shortest_side_and_val_differs(sample):
    train, val = _files(sample["train"]), _files(sample["val"])
    sizes = set()
    for data in [*train.values(), *val.values()]:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            im.load()
            assert min(im.size) == CFG.shortest_side
            sizes.add(im.size)
    assert len(sizes) > 3  # several aspect ratios, portrait and landscape
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)
    assert not set(train.values()) & set(val.values())  # no val image is a train image
    assert len(set(train.values())) == len(train)


def test_train_and_val_come_from_disjoint_photographs(sample):
    """No crop of a val photograph is in train: by construction (each photograph is in one
    split) and by content (no train image's pixels match any val photograph's region)."""
    import numpy as np

    photos = split_photos()
    assert photos["train"] and photos["val"] and not set(photos["train"]) & set(photos["val"])
    assert len(photos["train"]) + len(photos["val"]) >= 12  # every colour photograph the dependencies ship
    # the loaded pixels differ too (a photograph listed twice under two names would not)
    digests = {
        split: {
            hashlib.sha256(p.load().tobytes()).hexdigest()
            for c in SAMPLE_CATEGORIES
            if c.split == split
            for p in c.sources
        }
        for split in ("train", "val")
    }
    assert not digests["train"] & digests["val"]
    lists = _lists(sample["filelist"])
    train_labels = {line.split(" ")[1] for line in lists["places365_train_standard.txt"]}
    val_labels = {line.split(" ")[1] for line in lists["places365_val.txt"]}
    assert not train_labels & val_labels  # val categories have no train images

    # content: tiny thumbnails of every val image are far from every train image's
    def thumbs(path: Path) -> np.ndarray:
        out = []
        for data in _files(path).values():
            with Image.open(io.BytesIO(data)) as im:
                out.append(np.asarray(im.convert("RGB").resize((8, 8), Image.Resampling.BOX), dtype=np.float32))
        return np.stack(out).reshape(len(out), -1)

    train, val = thumbs(sample["train"]), thumbs(sample["val"])
    d = np.sqrt(((val[:, None, :] - train[None, :, :]) ** 2).mean(axis=2))  # (n_val, n_train) RMS in 0..255
    assert d.min() > 8.0, d.min()


def test_cli_sample_and_params(tmp_path, repo_root):
    assert load_params(repo_root / "params.yaml").data.sample == CFG  # params.yaml keeps the defaults
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  sample:\n    train_per_category: 2\n    val_per_category: 1\n    shortest_side: 64\n")
    assert main(["data", "sample", "--out", str(tmp_path / "raw"), "--params", str(params)]) == 0
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(SAMPLE_FILES.values())
    params.write_text("data:\n  sample:\n    shortest_side: 8\n")
    assert main(["data", "sample", "--out", str(tmp_path / "raw2"), "--params", str(params)]) == 2
    assert not (tmp_path / "raw2").exists()
