"""Pretrained-weights table and fetching through the verified downloader (local server only)."""

from __future__ import annotations

import hashlib
import re

import pytest
from conftest import cli_error_lines
from helpers.range_server import RangeServer, Route

from inpnet.cli import main
from inpnet.errors import DownloadError
from inpnet.weights import WEIGHTS, WeightsSpec, fetch_weights

FAST = dict(retries=0, backoff_s=0.0, timeout_s=5.0, progress=False)
BLOB = b"fake weights " * 1000


@pytest.fixture
def server():
    with RangeServer() as srv:
        yield srv


def test_table_names_carry_their_checksums():
    assert WEIGHTS["fid_inception"].filename == "pt_inception-2015-12-05-6726825d.pth"
    assert {"mae_vit_base", "mae_vit_large", "lpips_vgg16"} <= set(WEIGHTS)
    for spec in WEIGHTS.values():
        assert spec.urls and all(u.startswith("https://") for u in spec.urls)
        hub_hash = re.search(r"-([0-9a-f]{8})\.pth$", spec.filename)
        if hub_hash:  # torch-hub convention: the name ends in the sha256 prefix
            assert spec.sha256_prefix == hub_hash.group(1), spec.name
    assert WEIGHTS["mae_vit_base"].md5_prefix == "8cad7c"


def test_fetch_from_a_mirror_verifies_the_prefix(server, tmp_path, monkeypatch):
    prefix = hashlib.sha256(BLOB).hexdigest()[:8]
    spec = WeightsSpec(
        name="toy",
        filename=f"toy-{prefix}.pth",
        use="test",
        urls=(server.url("/gone.pth"), server.url("/mirror.pth")),
        sha256_prefix=prefix,
    )
    monkeypatch.setitem(WEIGHTS, "toy", spec)
    server.routes["/mirror.pth"] = Route(BLOB, content_type="application/octet-stream")
    path = fetch_weights("toy", tmp_path, **FAST)  # the first URL answers 404, the mirror works
    assert path == tmp_path / spec.filename and path.read_bytes() == BLOB

    bad = WeightsSpec(
        name="bad", filename="bad.pth", use="test", urls=(server.url("/mirror.pth"),), sha256_prefix="00000000"
    )
    monkeypatch.setitem(WEIGHTS, "bad", bad)
    with pytest.raises(DownloadError, match="does not verify"):
        fetch_weights("bad", tmp_path, **FAST)
    assert not (tmp_path / "bad.pth").exists()


def test_fetch_with_url_and_sha256_override(server, tmp_path):
    server.routes["/mae.pth"] = Route(BLOB)
    full = hashlib.sha256(BLOB).hexdigest()
    path = fetch_weights("mae_vit_base", tmp_path, url=server.url("/mae.pth"), sha256=full, **FAST)
    assert path.name == "mae_pretrain_vit_base.pth"
    with pytest.raises(DownloadError, match=r"does not verify.*md5"):  # the table's md5 prefix applies otherwise
        fetch_weights("mae_vit_large", tmp_path, url=server.url("/mae.pth"), **FAST)
    with pytest.raises(DownloadError, match="unknown weights 'nope'"):
        fetch_weights("nope", tmp_path)
    with pytest.raises(DownloadError, match="not 64 hex digits"):
        fetch_weights("mae_vit_base", tmp_path, sha256="abc")


def test_cli_weights(server, tmp_path, capsys):
    assert main(["weights", "list"]) == 0
    assert "pt_inception-2015-12-05-6726825d.pth" in capsys.readouterr().out
    server.routes["/w.pth"] = Route(BLOB)
    full = hashlib.sha256(BLOB).hexdigest()
    args = ["weights", "fetch", "--name", "fid_inception", "--dest", str(tmp_path), "--no-progress"]
    assert main([*args, "--url", server.url("/w.pth"), "--sha256", full]) == 0
    assert (tmp_path / "pt_inception-2015-12-05-6726825d.pth").read_bytes() == BLOB
    capsys.readouterr()
    assert (
        main(
            [
                "weights",
                "fetch",
                "--name",
                "lpips_vgg16",
                "--dest",
                str(tmp_path),
                "--no-progress",
                "--url",
                server.url("/missing.pth"),
            ]
        )
        == 2
    )
    err = cli_error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "missing.pth" in err[0] and "404" in err[0]
