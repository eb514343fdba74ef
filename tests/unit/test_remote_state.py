"""What the remote files look like now (``data/remote.json``), how a download uses it, and
when the train stage continues a checkpoint it finds (``models/`` is a DVC persist output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.params import params_for_tests, tiny_variant
from helpers.range_server import RangeServer, Route

from inpnet.config import DataConfig, FetchConfig, RemoteFile
from inpnet.data.fetch import download
from inpnet.data.remote import head_validators, remote_state, validators_path, write_remote_state
from inpnet.errors import DownloadError
from inpnet.stages.train import _inputs_path, _keep_only_same_inputs, _why_not_resumable, inputs_record


@pytest.fixture
def server():
    with RangeServer() as srv:
        yield srv


def _data(server: RangeServer, bodies: dict[str, bytes]) -> DataConfig:
    for name, body in bodies.items():
        server.routes[f"/m/{name}"] = Route(body)
    files = {
        part: RemoteFile(url=f"http://unused/{name}", filename=name)
        for part, name in zip(("train", "val", "filelist"), bodies, strict=True)
    }
    return DataConfig(source="places365", fetch=FetchConfig(url_base=server.url("/m"), **files))


def test_head_validators_and_remote_state_follow_the_server(server: RangeServer, tmp_path: Path) -> None:
    data = _data(server, {"t.tar": b"train" * 100, "v.tar": b"val", "f.tar": b"list"})
    got = head_validators(server.url("/m/t.tar"))
    assert got["ETag"] == server.routes["/m/t.tar"].etag and got["Content-Length"] == "500"
    before = write_remote_state(data, tmp_path / "remote.json")
    assert json.loads((tmp_path / "remote.json").read_text()) == before
    assert before["files"]["train"]["url"] == server.url("/m/t.tar")
    server.routes["/m/t.tar"] = Route(b"TRAIN" * 100)  # same size, new content
    after = remote_state(data)
    assert after["files"]["train"] != before["files"]["train"]
    assert after["files"]["val"] == before["files"]["val"]
    assert server.requests == []  # HEAD only, no body fetched


def test_head_of_a_missing_file_names_the_url(server: RangeServer) -> None:
    with pytest.raises(DownloadError, match=r"/m/nope\.tar: HEAD answered HTTP 404"):
        head_validators(server.url("/m/nope.tar"))


def test_sample_state_is_stable() -> None:
    state = remote_state(DataConfig(source="sample"))
    assert state["source"] == "sample" and len(state["photos"]) >= 10
    assert remote_state(DataConfig(source="sample")) == state


def test_a_part_from_another_version_is_not_resumed(server: RangeServer, tmp_path: Path) -> None:
    old, new = b"a" * 1000, b"b" * 1000
    server.routes["/f.tar"] = Route(old, drop_after=[400, 0])  # then no progress: gives up
    dest = tmp_path / "f.tar"
    url = server.url("/f.tar")
    with pytest.raises(DownloadError):
        download(url, dest, retries=0, backoff_s=0, progress=False, validators=head_validators(url))
    assert (tmp_path / "f.tar.part").stat().st_size == 400
    server.routes["/f.tar"] = Route(new)
    server.requests.clear()
    download(url, dest, backoff_s=0, progress=False, validators=head_validators(url))
    assert dest.read_bytes() == new  # not 400 bytes of the old file and 600 of the new
    assert server.requests == [("/f.tar", None)]
    assert json.loads(validators_path(dest).read_text())["ETag"] == server.routes["/f.tar"].etag


def test_same_version_resumes_and_a_changed_complete_file_is_fetched_again(server: RangeServer, tmp_path: Path) -> None:
    body = bytes(range(256)) * 8
    server.routes["/f.tar"] = Route(body, drop_after=[500])
    dest, url = tmp_path / "f.tar", server.url("/f.tar")
    download(url, dest, backoff_s=0, progress=False, validators=head_validators(url))
    assert server.requests == [("/f.tar", None), ("/f.tar", "bytes=500-")]
    server.requests.clear()
    download(url, dest, progress=False, validators=head_validators(url))
    assert server.requests == []  # unchanged on the server: kept
    server.routes["/f.tar"] = Route(body[::-1])
    download(url, dest, progress=False, validators=head_validators(url))
    assert dest.read_bytes() == body[::-1]


def _fake_checkpoint(ckpt: Path, *, finished: bool) -> None:
    ckpt.mkdir(parents=True)
    (ckpt / "meta.json").write_text(json.dumps({"step": 2, "finished": finished}))


def test_train_stage_continues_only_an_unfinished_checkpoint_of_the_same_inputs(tmp_path: Path) -> None:
    variant = tiny_variant()
    shards, val, masks = (tmp_path / n for n in ("train", "val", "masks"))
    for folder in (shards, val, masks):
        folder.mkdir()
        (folder / "manifest.json").write_text(f"{folder.name} v1")
    inputs = inputs_record(variant, shards, val, masks)
    ckpt = tmp_path / "models" / variant.name
    _fake_checkpoint(ckpt, finished=False)
    assert "missing" in (_why_not_resumable(ckpt, inputs) or "")  # no record of what it was trained on
    _inputs_path(ckpt).write_text(json.dumps(inputs))
    assert _why_not_resumable(ckpt, inputs) is None

    other_lr = params_for_tests().variant(variant.name)
    other_lr = other_lr.model_copy(update={"train": other_lr.train.model_copy(update={"lr": 0.123})})
    assert "variant" in (_why_not_resumable(ckpt, inputs_record(other_lr, shards, val, masks)) or "")
    (shards / "manifest.json").write_text("train v2")  # fresh data
    changed = inputs_record(variant, shards, val, masks)
    assert "train_shards" in (_why_not_resumable(ckpt, changed) or "")

    _keep_only_same_inputs(ckpt, changed)  # deletes the checkpoint, records the new inputs
    assert not ckpt.exists() and json.loads(_inputs_path(ckpt).read_text()) == changed

    _fake_checkpoint(ckpt, finished=True)
    assert "finished" in (_why_not_resumable(ckpt, changed) or "")
