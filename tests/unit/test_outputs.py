"""Output folders: one run at a time (a held lock refuses, a dead holder's lock is taken over),
and atomic writes that leave no temporary file and name the path when they fail."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from helpers.locks import lock_held_elsewhere

from inpnet.errors import OutputError, OutputLockedError
from inpnet.outputs import FolderLock, locks_output, write_atomic


def test_a_folder_locked_by_another_process_names_its_pid_and_time(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    with lock_held_elsewhere(out) as holder:
        with pytest.raises(OutputLockedError) as info:
            FolderLock(out).acquire()
        message = str(info.value)
        assert message.startswith(f"{out} is locked by PID {holder.pid} since ")
        assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", message), message
    # the holder was killed without releasing: the kernel dropped its flock, the lock is taken over
    with FolderLock(out) as lock:
        assert json.loads(lock.lock_file.read_text())["pid"] == os.getpid()
    assert not lock.lock_file.exists()  # a released lock leaves nothing behind


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "masks"
    lock = FolderLock(out)
    lock.lock_file.write_text(json.dumps({"pid": 999999999, "since": "2020-01-01 00:00:00"}))
    with lock:
        assert lock.held and json.loads(lock.lock_file.read_text())["pid"] == os.getpid()


def test_one_process_cannot_hold_a_folder_twice_and_two_spellings_share_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    (tmp_path / "alias").symlink_to(tmp_path, target_is_directory=True)
    with FolderLock(out), pytest.raises(OutputLockedError, match=f"locked by PID {os.getpid()}"):
        FolderLock(tmp_path / "alias" / "reports").acquire()
    with FolderLock(tmp_path / "alias" / "reports"):
        pass


def test_the_lock_is_beside_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with FolderLock(out) as lock:
        assert lock.lock_file == tmp_path / "a" / ".b.lock" and lock.lock_file.is_file()
        assert not out.exists()  # a run that fails early leaves no empty output folder
    out.mkdir()
    with FolderLock(out):
        assert list(out.iterdir()) == []  # nothing inside: DVC hashes such folders whole


def test_the_decorator_holds_the_lock_for_the_call(tmp_path: Path) -> None:
    @locks_output("out_dir")
    def write(name: str, *, out_dir: Path) -> bool:
        return FolderLock(out_dir).lock_file.is_file()

    assert write("x", out_dir=tmp_path / "o")
    assert not FolderLock(tmp_path / "o").lock_file.exists()


def test_an_output_folder_that_cannot_be_created_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(
        OutputError,
        match=r"file/out: cannot lock the output folder: a file of that name exists where a folder is needed \(.*/file\)",
    ):
        FolderLock(tmp_path / "file" / "out").acquire()
    with pytest.raises(OutputError, match=r"file: the output folder is a file"):
        FolderLock(tmp_path / "file").acquire()


def test_write_atomic_failures_name_the_path_and_leave_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OutputError, match=r"dir.png: cannot write: a folder stands where the file would be written"):
        write_atomic(tmp_path / "dir.png", b"data")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"file/x.png: cannot write: a part of the path is a file"):
        write_atomic(tmp_path / "file" / "x.png", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "file"]
    assert list((tmp_path / "dir.png").iterdir()) == []
    write_atomic(tmp_path / "ok.bin", b"data", durable=True)
    assert (tmp_path / "ok.bin").read_bytes() == b"data"


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs /sys (a file system even root cannot write)")
def test_write_atomic_into_sys_is_an_output_error() -> None:
    with pytest.raises(OutputError, match=r"^/sys/x.png: cannot write: "):
        write_atomic(Path("/sys/x.png"), b"data")


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs /sys (a file system even root cannot write)")
def test_a_folder_under_sys_cannot_be_locked() -> None:
    with pytest.raises(OutputError, match=r"^/sys/ev: cannot lock the output folder: .*\(/sys/.ev.lock\)"):
        FolderLock(Path("/sys/ev")).acquire()


# ------------------------------------------------------- every command that writes a folder


def _locked_run(capsys: pytest.CaptureFixture[str], folder: Path, argv: list[str]) -> str:
    """Run the CLI while another process holds ``folder``; returns its one error line."""
    from conftest import cli_error_lines

    from inpnet.cli import main

    capsys.readouterr()
    with lock_held_elsewhere(folder) as holder:
        assert main(argv) == 2
    lines = cli_error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"inpnet: error: {folder} is locked by PID {holder.pid} since "), (
        lines
    )
    return lines[0]


def test_two_shard_runs_into_one_out_the_second_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers.places_tar import build_train_tar

    from inpnet.cli import main
    from inpnet.data.manifest import load_manifest
    from inpnet.registry.tracking import file_sha256

    places = build_train_tar(tmp_path / "raw", n_good=6, bad=False)
    out = tmp_path / "shards" / "train"
    argv = [
        "data",
        "shard",
        "--no-prefect",
        "--split",
        "train",
        "--tar",
        str(places.tar),
        "--filelist",
        str(places.filelist),
        "--out",
        str(out),
        "--workers",
        "1",
        "--params",
        str(tmp_path / "none.yaml"),
    ]
    (tmp_path / "none.yaml").write_text("data:\n  shard: {samples_per_shard: 3, shard_multiple: 1}\n")
    _locked_run(capsys, out, [*argv, "--resize", "32"])
    assert not out.exists() or not any(out.iterdir())  # the refused run wrote nothing
    assert main(argv) == 0  # the holder is gone: its lock is taken over
    manifest = load_manifest(out)
    assert all(
        file_sha256(out / s.name) == s.sha256 and (out / s.name).stat().st_size == s.bytes for s in manifest.shards
    )


def test_mask_bank_evaluate_compare_and_train_refuse_a_locked_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], repo_root: Path
) -> None:
    missing = tmp_path / "missing"  # inputs that do not exist: the lock is checked before any work
    _locked_run(
        capsys,
        tmp_path / "bank",
        [
            "masks",
            "bank",
            "--out",
            str(tmp_path / "bank"),
            "--size",
            "16",
            "--patterns",
            "center",
            "--ratios",
            "0.3",
            "--per-cell",
            "1",
            "--params",
            str(missing / "params.yaml"),
        ],
    )
    _locked_run(
        capsys,
        tmp_path / "ev",
        [
            "evaluate",
            "--method",
            "telea",
            "--images",
            str(missing),
            "--masks",
            str(missing),
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    _locked_run(capsys, tmp_path / "cmp", ["compare", str(missing), "--out", str(tmp_path / "cmp")])
    from helpers.train import write_params

    _locked_run(
        capsys,
        tmp_path / "models" / "inpnet_tiny",
        [
            "train",
            "--variant",
            "inpnet_tiny",
            "--params",
            str(write_params(tmp_path / "params.yaml")),
            "--shards",
            str(tmp_path),
            "--out",
            str(tmp_path / "models"),
            "--no-mlflow",
            "--device",
            "cpu",
        ],
    )
