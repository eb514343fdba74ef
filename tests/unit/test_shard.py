"""Sharding a tar the test builds: counts, labels, rejection reasons, determinism, resume, errors."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from conftest import cli_error_lines
from helpers.places_tar import (
    add_file,
    build_train_tar,
    build_val_tar,
    claims_size,
    filelist_tar,
    jpeg_bytes,
    set_header_field,
)

from inpnet.cli import main
from inpnet.config import ShardConfig
from inpnet.data import manifest as manifest_mod
from inpnet.data import shard as shard_mod
from inpnet.data import tarindex as tarindex_mod
from inpnet.data.jpeg import DEFAULT_MAX_PIXELS, BadImage, check_jpeg, verify_decode
from inpnet.data.manifest import load_manifest
from inpnet.data.shard import plan_shards, shard_tar
from inpnet.data.tarindex import index_tar, read_labels
from inpnet.data.tarwriter import TarWriter
from inpnet.errors import DataError

CFG = ShardConfig(samples_per_shard=5, shard_multiple=2, workers=2)


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory):
    return build_train_tar(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def reference(places, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run that the other tests compare against."""
    out = tmp_path_factory.mktemp("ref") / "train"
    shard_tar(places.tar, places.filelist, "train", out, CFG)
    return out


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def test_counts_labels_and_rejections(places, reference: Path) -> None:
    manifest = load_manifest(reference)
    n_good = len(places.good)
    assert manifest.totals["samples"] == n_good == 24
    # 24 samples / 5 per shard = 5 shards, rounded up to a multiple of 2
    assert manifest.totals["shards"] == 6 == len(list(reference.glob("*.tar")))
    reasons = {r["member"]: r["reason"] for r in manifest.rejected}
    assert set(reasons) == set(places.bad)
    for member, fragment in places.bad.items():
        assert fragment in reasons[member], (member, reasons[member])
    assert "data_large" not in reasons  # directories are structure, not rejections
    samples = list(wds.WebDataset([str(reference / s.name) for s in manifest.shards], shardshuffle=False))
    assert len(samples) == n_good
    seen = {}
    for s in samples:
        meta = json.loads(s["json"])
        assert "." not in s["__key__"] and "/" not in s["__key__"]
        assert int(s["cls"]) == meta["label"] == places.good[meta["path"]]
        assert check_jpeg(s["jpg"]).width == meta["width"]
        seen[meta["path"]] = s["__key__"]
    assert list(seen) == list(places.good)  # tar order, every good member once
    assert seen["data_large/b/bazaar/indoor/00000002.jpg"] == "b_bazaar_indoor_00000002"
    assert sum(s.samples for s in manifest.shards) == n_good
    for s in manifest.shards:
        assert (reference / s.name).stat().st_size == s.bytes


def test_standard_tar_with_fixed_headers(reference: Path) -> None:
    with tarfile.open(next(reference.glob("*.tar"))) as tar:
        infos = tar.getmembers()
    assert [i.name.rsplit(".", 1)[1] for i in infos[:3]] == ["cls", "jpg", "json"]
    for info in infos:
        assert info.isreg() and info.mode == 0o644 and info.uid == info.gid == 0 and info.uname == "root"
        assert info.mtime == 1_600_000_000 and not info.pax_headers


def test_nothing_escapes_the_output_folder(places, reference: Path) -> None:
    root = places.tar.parent
    assert sorted(p.name for p in root.iterdir()) == sorted([places.tar.name, places.filelist.name])
    assert not (root.parent / "escape.jpg").exists() and not Path("/abs/escape.jpg").exists()
    assert sorted(p.name for p in reference.iterdir()) == sorted(
        [*(f"train-{i:06d}.tar" for i in range(6)), "manifest.json"]
    )


def test_deterministic_across_runs_and_worker_counts(places, reference: Path, tmp_path: Path) -> None:
    shard_tar(places.tar, places.filelist, "train", tmp_path / "one", CFG.model_copy(update={"workers": 1}))
    assert _shard_bytes(tmp_path / "one") == _shard_bytes(reference)
    assert load_manifest(tmp_path / "one").to_dict()["shards"] == load_manifest(reference).to_dict()["shards"]


def test_rerun_is_a_no_op(places, reference: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
    shard_tar(places.tar, places.filelist, "train", reference, CFG)
    assert {p.name: p.stat().st_mtime_ns for p in reference.iterdir()} == before


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from inpnet.config import ShardConfig
    from inpnet.data import tarwriter
    from inpnet.data.shard import shard_tar

    original = tarwriter.TarWriter.add
    def add(self, *args, **kwargs):  # SIGKILL in the middle of the 4th shard, bytes on disk
        if self.path.name == ".train-000003.tar.tmp" and self._pending_bytes:
            self._flush()
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, *args, **kwargs)
    tarwriter.TarWriter.add = add
    shard_tar(sys.argv[1], sys.argv[2], "train", sys.argv[3], ShardConfig(**{cfg}))
    """
)


def test_resume_after_kill_is_byte_identical(
    places, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "train"
    script = _KILL_SCRIPT.replace("{cfg}", repr({**CFG.model_dump(), "workers": 1}))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(places.tar), str(places.filelist), str(out)],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr.decode()
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert len(finished) == 3 and list(out.glob(".*.tmp")) and not (out / "manifest.json").exists()

    converted: list[str] = []
    real = shard_mod.write_shard
    monkeypatch.setattr(shard_mod, "write_shard", lambda job, spec: converted.append(job.name) or real(job, spec))
    shard_tar(places.tar, places.filelist, "train", out, CFG)
    assert sorted(converted) == [f"train-{i:06d}.tar" for i in range(3, 6)]
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in finished.items())
    assert _shard_bytes(out) == _shard_bytes(reference)
    assert not list(out.glob(".*")), "temp files and resume records are cleaned up"


def test_disk_full_leaves_no_complete_looking_shard(places, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(TarWriter, "close", full)
    out = tmp_path / "train"
    with pytest.raises(DataError, match="No space left on device") as err:
        shard_tar(places.tar, places.filelist, "train", out, CFG.model_copy(update={"workers": 1}))
    assert "\n" not in str(err.value) and "train-000000.tar" in str(err.value)
    assert not list(out.glob("*.tar")) and not list(out.glob(".*.tmp")) and not (out / "manifest.json").exists()


def test_wrong_file_list_and_missing_tar_are_one_line_errors(
    places, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    val = build_val_tar(tmp_path / "val")
    with pytest.raises(DataError, match="matches none of the") as err:
        shard_tar(val.tar, places.filelist, "val", tmp_path / "out", CFG)
    assert str(places.filelist) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    code = main(
        [
            "data",
            "shard",
            "--no-prefect",
            "--split",
            "train",
            "--tar",
            str(tmp_path / "missing.tar"),
            "--filelist",
            str(places.filelist),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    stderr = capsys.readouterr().err.strip()
    assert code == 2 and "missing.tar" in stderr and len(stderr.splitlines()) == 1


def test_val_split_from_filelist_tar(places, tmp_path: Path) -> None:
    val = build_val_tar(tmp_path / "val")
    lists = filelist_tar(tmp_path, places.filelist, val.filelist)
    manifest = shard_tar(
        val.tar, lists, "val", tmp_path / "shards" / "val", ShardConfig(samples_per_shard=3, shard_multiple=4)
    )
    assert manifest.totals == {"shards": 4, "samples": 8, "bytes": manifest.totals["bytes"], "rejected": 0}
    labels = {
        json.loads(s["json"])["path"]: int(s["cls"])
        for s in wds.WebDataset(
            [str(tmp_path / "shards" / "val" / s.name) for s in manifest.shards], shardshuffle=False
        )
    }
    assert labels == val.good
    with tarfile.open(tmp_path / "shards" / "val" / "val-000000.tar") as tar:
        assert "Places365_val_00000001" in {k.rsplit(".")[0] for k in tar.getnames()}


def test_resize_reencodes_shortest_side(places, tmp_path: Path) -> None:
    cfg = CFG.model_copy(update={"resize": 32, "jpeg_quality": 80})
    manifest = shard_tar(places.tar, places.filelist, "train", tmp_path / "r", cfg)
    assert manifest.totals["samples"] == len(places.good)
    for s in wds.WebDataset([str(tmp_path / "r" / s.name) for s in manifest.shards], shardshuffle=False):
        meta, info = json.loads(s["json"]), check_jpeg(s["jpg"])
        assert min(info.width, info.height) == 32 and (meta["width"], meta["height"]) == (info.width, info.height)


def test_decode_verification_catches_what_structure_cannot(places) -> None:
    data = next(iter(places.good))
    with tarfile.open(places.tar) as tar:
        good = tar.extractfile(data).read()
    middle = len(good) // 2
    zeroed = good[:middle] + bytes(200) + good[middle + 200 :]
    check_jpeg(zeroed)  # structurally fine: zeros are valid entropy-coded bytes
    with pytest.raises(BadImage, match="does not decode"):
        verify_decode(zeroed)
    verify_decode(good)


@pytest.mark.slow
def test_prefect_flow_matches_plain_run(places, reference: Path, tmp_path: Path, repo_root: Path) -> None:
    out = tmp_path / "train"
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  shard: {samples_per_shard: 5, shard_multiple: 2, workers: 2, task_runner: threads}\n")
    code = main(
        [
            "data",
            "shard",
            "--split",
            "train",
            "--tar",
            str(places.tar),
            "--filelist",
            str(places.filelist),
            "--out",
            str(out),
            "--params",
            str(params),
        ]
    )
    assert code == 0
    assert _shard_bytes(out) == _shard_bytes(reference)


# --------------------------------------------------------------------------- hostile input


def _shard_cli(places, tar: Path, out: Path, *extra: str, filelist: Path | None = None) -> int:
    return main(
        [
            "data",
            "shard",
            "--no-prefect",
            "--split",
            "train",
            "--tar",
            str(tar),
            "--filelist",
            str(filelist or places.filelist),
            "--out",
            str(out),
            *extra,
        ]
    )


def _header_of(tar: Path, name: str) -> int:
    return next(m.offset - 512 for m in index_tar(tar) if m.name == name)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("size_field", "expected"),
    [
        (b"-0000001000\0", r"size field b'-0000001000\\x00' is not an octal number"),
        (
            b"\x80" + (2**80).to_bytes(11, "big"),
            r"size field says 1208925819614629174706176 bytes, which runs past the end",
        ),
        (b"\x80" + (8 << 30).to_bytes(11, "big"), r"size field says 8589934592 bytes, which runs past the end"),
    ],
)
def test_hostile_size_field_is_a_one_line_error(
    places, tmp_path: Path, capsys: pytest.CaptureFixture[str], size_field: bytes, expected: str
) -> None:
    name = next(iter(places.good))
    raw = places.tar.read_bytes()
    header = _header_of(places.tar, name)
    tar = tmp_path / "hostile.tar"
    tar.write_bytes(set_header_field(raw, header, 124, 136, size_field))
    assert _shard_cli(places, tar, tmp_path / "out") == 2
    [line] = cli_error_lines(capsys.readouterr().err)
    assert re.search(rf"hostile.tar: corrupt tar header at byte {header}: .*{expected}", line), line


def test_tar_cut_inside_a_header_is_an_error(places, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = places.tar.read_bytes()
    header = _header_of(places.tar, "data_large/c/coast/00000015.jpg")
    tar = tmp_path / "cut.tar"
    tar.write_bytes(raw[: header + 200])
    assert _shard_cli(places, tar, tmp_path / "out") == 2
    [line] = cli_error_lines(capsys.readouterr().err)
    assert f"cut.tar: truncated tar: it ends at byte {header + 200}, 200 bytes into the header at byte {header}" in line
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_non_utf8_member_name_is_rejected_with_the_reason(places, tmp_path: Path) -> None:
    name = "data_large/a/airfield/00000001.jpg"
    tar = tmp_path / "names.tar"
    tar.write_bytes(
        set_header_field(
            places.tar.read_bytes(), _header_of(places.tar, name), 0, 100, b"data_large/a/airfield/caf\xe9.jpg"
        )
    )
    manifest = shard_tar(tar, places.filelist, "train", tmp_path / "out", CFG)
    reasons = {r["member"]: r["reason"] for r in manifest.rejected}
    assert (
        reasons["data_large/a/airfield/caf\\xe9.jpg"] == "name is not valid UTF-8: 'data_large/a/airfield/caf\\xe9.jpg'"
    )
    assert manifest.totals["samples"] == len(places.good) - 1
    json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))  # valid UTF-8 JSON


def test_non_ascii_digit_label_names_the_list_line(places, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = places.filelist.read_text().splitlines()
    lines[3] = lines[3].rsplit(" ", 1)[0] + " ²"
    filelist = tmp_path / "places365_train_standard.txt"
    filelist.write_text("\n".join(lines) + "\n")
    assert _shard_cli(places, places.tar, tmp_path / "out", filelist=filelist) == 2
    [line] = cli_error_lines(capsys.readouterr().err)
    assert f"{filelist}: line 4 is not '<path> <class index>'" in line


def test_decompression_bomb_is_refused_by_max_pixels(tmp_path: Path) -> None:
    places = build_train_tar(tmp_path / "raw", n_good=6, bad=False)
    with tarfile.open(places.tar) as tar:
        first = tar.getmembers()[1]
        good = tar.extractfile(first).read()
    bomb = claims_size(good, 60000, 60000)
    raw = places.tar.read_bytes()
    raw = raw[: first.offset_data] + bomb + raw[first.offset_data + len(bomb) :]  # same size: only the SOF changed
    places.tar.write_bytes(raw)
    manifest = shard_tar(places.tar, places.filelist, "train", tmp_path / "out", CFG)
    [reject] = manifest.rejected
    assert reject["member"] == first.name
    assert reject["reason"] == "JPEG is 60000x60000 (3600.0 megapixels), over the limit of 50.0 (data.shard.max_pixels)"
    small = shard_tar(
        places.tar, places.filelist, "train", tmp_path / "small", CFG.model_copy(update={"max_pixels": 72 * 56 - 1})
    )
    assert small.totals["samples"] == 0 and small.settings["max_pixels"] == 72 * 56 - 1
    assert ShardConfig().max_pixels == DEFAULT_MAX_PIXELS  # the decode paths without a config use the same limit


def _flip(path: Path, at: int, *, keep_mtime: bool = False) -> None:
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_flipped_byte_in_a_finished_shard_is_rewritten(
    places, reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "train"
    shutil.copytree(reference, out)
    victim = out / "train-000002.tar"
    _flip(victim, victim.stat().st_size // 2)
    untouched = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar") if p != victim}
    with caplog.at_level(logging.WARNING, logger="inpnet.data.shard"):
        manifest = shard_tar(places.tar, places.filelist, "train", out, CFG)
    assert f"{victim}: its sha256 differs from the manifest; writing it again" in caplog.text
    assert _shard_bytes(out) == _shard_bytes(reference)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar") if p != victim} == untouched
    assert manifest.to_dict() == load_manifest(reference).to_dict()  # per-shard rejections kept


def test_resume_check_sha256_finds_what_the_quick_check_cannot(
    places, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(manifest_mod, "TAIL_BYTES", 1024)  # the shards here are smaller than the real tail
    out = tmp_path / "train"
    shard_tar(places.tar, places.filelist, "train", out, CFG)
    victim = out / "train-000001.tar"
    _flip(victim, 600, keep_mtime=True)  # before the tail, mtime restored: invisible to the quick check
    before = victim.read_bytes()
    shard_tar(places.tar, places.filelist, "train", out, CFG)
    assert victim.read_bytes() == before
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"data": {"shard": CFG.model_dump()}}))
    assert _shard_cli(places, places.tar, out, "--params", str(params), "--resume-check", "sha256") == 0
    assert _shard_bytes(out) == _shard_bytes(reference)
    assert _shard_cli(places, places.tar, out, "--params", str(params), "--resume-check", "sha-256") == 2
    assert cli_error_lines(capsys.readouterr().err) == [
        "inpnet: error: data.shard.resume_check: Input should be 'quick' or 'sha256' (got 'sha-256')"
    ]


def test_shard_newer_than_the_manifest_is_checked_in_full_not_rewritten(
    places, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "train"
    shutil.copytree(reference, out)
    later = (out / "manifest.json").stat().st_mtime_ns + 10**9
    os.utime(out / "train-000004.tar", ns=(later, later))  # e.g. restored by a copy after the manifest
    shard_tar(places.tar, places.filelist, "train", out, CFG)
    assert (out / "train-000004.tar").stat().st_mtime_ns == later


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "entry",
    [
        ["-c", "import sys; from inpnet.cli import main; sys.exit(main(sys.argv[1:]))", "data", "shard"],
        ["-m", "pipelines.shard"],
    ],
)
def test_sigkill_takes_the_temporary_prefect_server_along(
    places, tmp_path: Path, repo_root: Path, entry: list[str]
) -> None:
    import psutil

    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"data": {"shard": CFG.model_dump()}}))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # so Prefect starts its temporary server
    env["INPNET_PREFECT_SERVER"] = "temporary"
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                *entry,
                "--split",
                "train",
                "--tar",
                str(places.tar),
                "--filelist",
                str(places.filelist),
                "--out",
                str(tmp_path / "out"),
                "--params",
                str(params),
            ],
            cwd=repo_root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        server = None
        for _ in range(2400):
            children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
            server = next((c for c in children if "uvicorn" in " ".join(_cmdline(c))), None)
            if server is not None or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert server is not None, (tmp_path / "stderr.txt").read_text()
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(server):
            server.kill()
            pytest.fail(f"the temporary Prefect server (pid {server.pid}) outlived a SIGKILL of the command")
    finally:
        if proc.poll() is None:
            proc.kill()


def _alive(process) -> bool:
    """Running and not a zombie (an orphan's exit may never be reaped in a container without init)."""
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(process) -> list[str]:
    import psutil

    try:
        return process.cmdline()
    except psutil.Error:
        return []


# --------------------------------------------------------------------------- the compact index and plan


def _tricky_tar(root: Path) -> tuple[Path, Path]:
    """Duplicate names and keys, a member labelled by its full name, a path listed twice, list
    entries the tar lacks (one twice), CRLF lines: every branch of the join and the plan."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    tar = root / "tricky.tar"
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as out:
        for name in [
            "data_large/a/x/1.jpg",
            "data_large/a/x/1.jpg",  # duplicate member name
            "./data_large/a/x/2.jpg",
            "top/a/x/3.jpg",  # the list names it in full
            "data_large/a/x/1.png",  # key a_x_1, like 1.jpg's
            "data_large/a/x_1.jpg",  # key a_x_1 again
            "data_large/a/x/unlisted.jpg",
            "data_large/a/x/twice.jpg",
            "data_large/a/x/" + "l" * 150 + ".jpg",  # a GNU long name
            *(f"data_large/c/y/{i:03d}.jpg" for i in range(9)),
        ]:
            add_file(out, name, jpeg_bytes(rng, 40, 32))
    lines = ["/a/x/1.jpg 3", "/a/x/2.jpg 4", "", "top/a/x/3.jpg 5", "/a/x/1.png 6", "/a/x_1.jpg 7"]
    lines += ["/a/x/twice.jpg 1", "/a/x/twice.jpg 2", "/gone/1.jpg 0", "/gone/1.jpg 0", "/gone/2.jpg 9"]
    lines += ["/a/x/" + "l" * 150 + ".jpg 8", *(f"/c/y/{i:03d}.jpg {i % 7}" for i in range(9))]
    filelist = root / "places365_train_standard.txt"
    filelist.write_bytes("\r\n".join(lines).encode() + b"\r\n")
    return tar, filelist


def test_duplicates_full_names_and_repeated_list_entries(tmp_path: Path) -> None:
    tar, filelist = _tricky_tar(tmp_path / "raw")
    manifest = shard_tar(tar, filelist, "train", tmp_path / "out", CFG)
    assert [(r["member"], r["reason"]) for r in manifest.rejected] == [
        ("data_large/a/x/1.jpg", "duplicate member name"),
        ("data_large/a/x/1.png", "duplicate key 'a_x_1' (same as 'data_large/a/x/1.jpg')"),
        ("data_large/a/x_1.jpg", "duplicate key 'a_x_1' (same as 'data_large/a/x/1.jpg')"),
        ("data_large/a/x/unlisted.jpg", "not in the train file list"),
    ]
    assert manifest.source["list_entries"] == 18 and manifest.source["list_entries_not_in_tar"] == 4
    samples = {
        json.loads(s["json"])["path"]: (s["__key__"], int(s["cls"]))
        for s in wds.WebDataset([str(tmp_path / "out" / s.name) for s in manifest.shards], shardshuffle=False)
    }
    assert samples["top/a/x/3.jpg"] == ("top_a_x_3", 5) and samples["./data_large/a/x/2.jpg"] == ("a_x_2", 4)
    assert samples["data_large/a/x/twice.jpg"] == ("a_x_twice", 2)  # the last entry of a path counts
    assert len(samples) == manifest.totals["samples"] == 14


def test_hash_collisions_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The join and the duplicate checks find strings by hash and confirm them by comparison:
    with one hash for every string the shards and manifest are the same."""
    tar, filelist = _tricky_tar(tmp_path / "raw")
    plain = shard_tar(tar, filelist, "train", tmp_path / "plain", CFG)
    monkeypatch.setattr(tarindex_mod, "hash", lambda value: 1, raising=False)
    monkeypatch.setattr(shard_mod, "hash", lambda value: 1, raising=False)
    colliding = shard_tar(tar, filelist, "train", tmp_path / "colliding", CFG)
    assert colliding.to_dict() == plain.to_dict()
    assert _shard_bytes(tmp_path / "colliding") == _shard_bytes(tmp_path / "plain")


def test_pickled_job_carries_only_its_own_members(places) -> None:
    members = index_tar(places.tar)
    labels = read_labels(places.filelist, "train", members)
    plan = plan_shards(members, labels, split="train", samples_per_shard=5, shard_multiple=2)
    job = plan.jobs[1]
    copy = pickle.loads(pickle.dumps(job))  # noqa: S301 - our own bytes
    assert list(copy.members) == list(job.members) and copy.members[-1] == job.members[-1]
    assert len(copy.members.table) == len(job.members) < len(members)
    assert len(pickle.dumps(job)) < 2000


@pytest.mark.timeout(120)
def test_index_labels_and_plan_stay_compact(tmp_path: Path) -> None:
    """Places365 train_large has 1.8M members: a Python object per member (Member, a dict of list
    paths, Candidate) held ~600 bytes each (1.1 GB). The columns hold the name and ~40 bytes more."""
    n = 20_000
    tar, filelist = tmp_path / "t.tar", tmp_path / "places365_train_standard.txt"
    lines = []
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as out:
        for i in range(n):
            rel = f"c/category{i % 97:02d}/{i:08d}.jpg"  # 36-byte names, as Places365's
            add_file(out, f"data_large/{rel}", b"x")
            lines.append(f"/{rel} {i % 365}\n")
    filelist.write_text("".join(lines))
    tracemalloc.start()
    try:
        members = index_tar(tar)
        labels = read_labels(filelist, "train", members)
        plan = plan_shards(members, labels, split="train", samples_per_shard=64, shard_multiple=4)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan.jobs) == 316 and sum(len(j.members) for j in plan.jobs) == n
    assert held / n < 100, f"{held / n:.0f} bytes a member held by the index, labels and plan"
    assert peak / n < 200, f"{peak / n:.0f} bytes a member at the peak"
