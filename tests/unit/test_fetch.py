"""Resumable download against a local Range-capable server: resume, verify, refuse."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_error_lines
from helpers.range_server import RangeServer, Route

from inpnet.cli import main
from inpnet.config import FetchConfig, RemoteFile
from inpnet.data.fetch import download, fetch_places365, places365_files, rebase_url
from inpnet.errors import DownloadError

FAST = dict(retries=2, backoff_s=0.0, timeout_s=5.0, chunk_bytes=4096, progress=False)


@pytest.fixture(scope="module")
def payload() -> bytes:
    return np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


@pytest.fixture
def server():
    with RangeServer() as srv:
        yield srv


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_interrupted_transfer_resumes_with_range_and_verifies(server, payload, tmp_path):
    server.routes["/big.tar"] = Route(payload, drop_after=[70_000, 50_000])
    dest = download(
        server.url("/big.tar"),
        tmp_path / "big.tar",
        size=len(payload),
        md5=_md5(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        **FAST,
    )
    assert dest.read_bytes() == payload
    assert not (tmp_path / "big.tar.part").exists()
    # each retry asks for the rest from exactly where the dropped connection stopped
    assert [r for _, r in server.requests] == [None, "bytes=70000-", "bytes=120000-"]


def test_resume_from_previous_run_hashes_the_prefix(server, payload, tmp_path):
    server.routes["/big.tar"] = Route(payload)
    (tmp_path / "big.tar.part").write_bytes(payload[:123_456])
    download(server.url("/big.tar"), tmp_path / "big.tar", md5=_md5(payload), **FAST)
    assert (tmp_path / "big.tar").read_bytes() == payload
    assert server.requests == [("/big.tar", "bytes=123456-")]


def test_corrupt_prefix_is_detected_and_redownloaded_once(server, payload, tmp_path):
    server.routes["/big.tar"] = Route(payload)
    bad = bytearray(payload[:100_000])
    bad[10] ^= 0xFF
    (tmp_path / "big.tar.part").write_bytes(bytes(bad))
    download(server.url("/big.tar"), tmp_path / "big.tar", md5=_md5(payload), **FAST)
    assert (tmp_path / "big.tar").read_bytes() == payload
    assert [r for _, r in server.requests] == ["bytes=100000-", None]


def test_checksum_mismatch_is_never_renamed(server, payload, tmp_path):
    server.routes["/big.tar"] = Route(payload)
    with pytest.raises(DownloadError, match=r"does not verify.*md5"):
        download(server.url("/big.tar"), tmp_path / "big.tar", md5="0" * 32, **FAST)
    assert not (tmp_path / "big.tar").exists() and not (tmp_path / "big.tar.part").exists()


def test_sha256_prefix_and_size(server, payload, tmp_path):
    server.routes["/w-6726825d.pth"] = Route(payload)
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    download(server.url("/w-6726825d.pth"), tmp_path / "w.pth", sha256_prefix=prefix, size=len(payload), **FAST)
    with pytest.raises(DownloadError, match="server reports 300000 bytes, expected 5"):
        download(server.url("/w-6726825d.pth"), tmp_path / "w2.pth", size=5, **FAST)
    assert not (tmp_path / "w2.pth").exists()


def test_404_and_html_name_the_url(server, payload, tmp_path):
    with pytest.raises(DownloadError, match=r"missing\.tar: server answered HTTP 404"):
        download(server.url("/missing.tar"), tmp_path / "m.tar", **FAST)
    server.routes["/login.tar"] = Route(b"<!DOCTYPE html><html>please log in</html>", content_type="text/html")
    with pytest.raises(DownloadError, match=r"login\.tar: server sent an HTML page"):
        download(server.url("/login.tar"), tmp_path / "l.tar", **FAST)
    server.routes["/sniff.tar"] = Route(b"  <HTML><body>moved</body></html>", content_type="application/octet-stream")
    with pytest.raises(DownloadError, match=r"sniff\.tar: the response is an HTML page"):
        download(server.url("/sniff.tar"), tmp_path / "s.tar", **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_complete_file_is_not_downloaded_again(server, payload, tmp_path):
    server.routes["/big.tar"] = Route(payload)
    dest = tmp_path / "big.tar"
    download(server.url("/big.tar"), dest, md5=_md5(payload), **FAST)
    download(server.url("/big.tar"), dest, md5=_md5(payload), **FAST)
    assert len(server.requests) == 1
    dest.write_bytes(payload[:-1])  # damaged after the fact: refuse rather than trust it
    with pytest.raises(DownloadError, match="already present but does not verify"):
        download(server.url("/big.tar"), dest, md5=_md5(payload), **FAST)


def test_server_ignoring_range_restarts_from_zero(server, payload, tmp_path):
    server.routes["/big.tar"] = Route(payload, ignore_range=True, drop_after=[100_000])
    download(server.url("/big.tar"), tmp_path / "big.tar", md5=_md5(payload), **FAST)
    assert (tmp_path / "big.tar").read_bytes() == payload
    assert server.requests[1] == ("/big.tar", "bytes=100000-")  # asked to resume, got 200 and the whole file


def test_416_finishes_a_whole_part_and_restarts_an_overlong_one(server, payload, tmp_path):
    server.routes["/big.tar"] = Route(payload)
    (tmp_path / "a.tar.part").write_bytes(payload)  # killed between the last write and the rename
    download(server.url("/big.tar"), tmp_path / "a.tar", md5=_md5(payload), **FAST)
    assert (tmp_path / "a.tar").read_bytes() == payload
    (tmp_path / "b.tar.part").write_bytes(payload + b"junk")  # longer than the file: corrupt
    download(server.url("/big.tar"), tmp_path / "b.tar", md5=_md5(payload), **FAST)
    assert (tmp_path / "b.tar").read_bytes() == payload
    assert [r for _, r in server.requests] == ["bytes=300000-", "bytes=300004-", None]


def test_gives_up_without_progress_and_keeps_resumable_part(server, payload, tmp_path):
    server.routes["/big.tar"] = Route(payload, drop_after=[1000, 0, 0, 0])
    with pytest.raises(DownloadError, match=r"gave up after 3 attempts.*resume"):
        download(server.url("/big.tar"), tmp_path / "big.tar", md5=_md5(payload), **FAST)
    assert (tmp_path / "big.tar.part").stat().st_size == 1000
    assert not (tmp_path / "big.tar").exists()
    download(server.url("/big.tar"), tmp_path / "big.tar", md5=_md5(payload), **FAST)
    assert (tmp_path / "big.tar").read_bytes() == payload


def test_places365_urls_overrides_and_mirror():
    cfg = FetchConfig()
    ((name, remote),) = places365_files("val", cfg, url_base="http://mirror/p365/")
    assert name == "val" and remote.url == "http://mirror/p365/val_large.tar"
    assert remote.md5 == "9b71c4993ad89d2d8bcbdc4aef38042f"
    assert [n for n, _ in places365_files("all", cfg)] == ["filelist", "val", "train"]
    ((_, remote),) = places365_files("train", cfg, {"train": "http://x/t.tar"})
    assert remote.url == "http://x/t.tar"
    assert rebase_url("http://a/b/c.tar", "http://m") == "http://m/c.tar"
    with pytest.raises(DownloadError, match="unknown Places365 part 'test'"):
        places365_files("test", cfg)


def test_fetch_places365_through_a_mirror(server, tmp_path):
    data = b"filelist tar bytes" * 100
    server.routes["/m/filelist_places365-standard.tar"] = Route(data)
    cfg = FetchConfig(
        filelist=RemoteFile(
            url="http://unused/filelist_places365-standard.tar",
            filename="filelist_places365-standard.tar",
            md5=_md5(data),
        ),
        backoff_s=0,
    )
    (path,) = fetch_places365("filelist", tmp_path, cfg, url_base=server.url("/m"), progress=False)
    assert path == tmp_path / "filelist_places365-standard.tar" and path.read_bytes() == data


def test_cli_fetch_exit_codes(server, tmp_path, capsys):
    data = b"x" * 5000
    server.routes["/m/val_large.tar"] = Route(data)
    params = tmp_path / "params.yaml"
    params.write_text(
        f"data:\n  fetch:\n    backoff_s: 0\n    retries: 0\n    val:\n"
        f"      url: http://unused/val_large.tar\n      filename: val_large.tar\n      md5: {_md5(data)}\n"
    )
    ok = main(
        [
            "data",
            "fetch",
            "--what",
            "val",
            "--dest",
            str(tmp_path / "raw"),
            "--url-base",
            server.url("/m"),
            "--params",
            str(params),
            "--no-progress",
        ]
    )
    assert ok == 0 and (tmp_path / "raw" / "val_large.tar").read_bytes() == data
    capsys.readouterr()
    code = main(
        [
            "data",
            "fetch",
            "--what",
            "train",
            "--dest",
            str(tmp_path / "raw"),
            "--url-base",
            server.url("/m"),
            "--params",
            str(params),
            "--no-progress",
        ]
    )
    err = cli_error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "HTTP 404" in err[0] and "train_large_places365standard.tar" in err[0]


def test_params_yaml_fetch_section_matches_defaults(repo_root: Path):
    from inpnet.config import load_params

    fetch = load_params(repo_root / "params.yaml").data.fetch
    assert fetch.train.md5 == "67e186b496a84c929568076ed01a8aa1"
    assert fetch.filelist.url.endswith("/filelist_places365-standard.tar")


def test_cli_unknown_part_is_a_usage_error(tmp_path):
    assert main(["data", "fetch", "--what", "nope", "--dest", str(tmp_path)]) == 2
    assert main(["data", "fetch", "--dest", str(tmp_path)]) == 2  # --what is required
