"""Checkpoints: atomic layout, crash recovery, weights-only state, strict weight loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers.train import tiny_variant

from inpnet.errors import CheckpointError
from inpnet.train import checkpoint as ckpt


def _save(path: Path, step: int, model: torch.nn.Module | None = None) -> Path:
    from inpnet.models.build import build_model

    v = tiny_variant()
    model = model or build_model(v.model)
    state = {"step": step, "ranks": [{"torch_rng": torch.get_rng_state(), "mask_rng": "{}"}], "optimizers": {}}
    return ckpt.save_checkpoint(path, variant=v, modules={"model": model}, state=state, meta={"step": step})


def test_save_writes_every_file_and_replaces_the_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "models" / "inpnet_tiny"
    _save(target, 1)
    _save(target, 2)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "meta.json", "model.safetensors", "state.pt"]
    assert ckpt.read_meta(target)["step"] == 2 and ckpt.load_state(target)["step"] == 2
    assert [p.name for p in target.parent.iterdir()] == ["inpnet_tiny"]  # no temp or old dirs left
    assert ckpt.read_variant(target) == tiny_variant()


def test_a_crash_between_the_renames_falls_back_to_the_previous_checkpoint(tmp_path: Path) -> None:
    target = tmp_path / "inpnet_tiny"
    _save(target, 1)
    os.rename(target, tmp_path / ".inpnet_tiny.old")  # as if killed right after moving it aside
    assert ckpt.resolve_checkpoint_dir(target) == tmp_path / ".inpnet_tiny.old"
    assert ckpt.read_meta(target)["step"] == 1
    _model, variant = ckpt.load_model(target)
    assert variant.name == "inpnet_tiny"


def test_missing_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="inpnet train --variant"):
        ckpt.load_model(tmp_path / "nothing")


def test_state_loading_refuses_arbitrary_pickled_objects(tmp_path: Path) -> None:
    target = _save(tmp_path / "inpnet_tiny", 1)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"step": 1, "payload": Evil()}, target / "state.pt")
    with pytest.raises(CheckpointError, match="cannot load trainer state safely"):
        ckpt.load_state(target)


def test_load_model_uses_ema_weights_and_refuses_mismatched_weights(tmp_path: Path) -> None:
    from inpnet.models.build import build_model

    v = tiny_variant()
    live, ema = build_model(v.model), build_model(v.model)
    with torch.no_grad():
        for p in ema.parameters():
            p.fill_(0.25)
    state = {"step": 1}
    target = ckpt.save_checkpoint(
        tmp_path / "c", variant=v, modules={"model": live, "model_ema": ema}, state=state, meta={"step": 1}
    )
    loaded, _ = ckpt.load_model(target)
    assert all(torch.all(p == 0.25) for p in loaded.parameters())
    loaded_live, _ = ckpt.load_model(target, ema=False)
    assert all(torch.equal(a, b) for a, b in zip(loaded_live.parameters(), live.parameters(), strict=True))
    with pytest.raises(CheckpointError, match="do not match"):
        ckpt.load_weights_into(torch.nn.Linear(3, 3), target, "model")


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from inpnet.errors import OutputError

    target = tmp_path / "inpnet_tiny"
    _save(target, 1)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OutputError, match=r"inpnet_tiny: cannot write the checkpoint: No space left on device"):
        _save(target, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["inpnet_tiny"] and ckpt.read_meta(target)["step"] == 1
    monkeypatch.undo()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match=r"a-file/m: cannot write the checkpoint: a file of that name exists"):
        _save(tmp_path / "a-file" / "m", 1)


def test_weights_hash_follows_the_weights_not_the_file(tmp_path: Path) -> None:
    from inpnet.models.build import build_model

    v = tiny_variant()
    torch.manual_seed(0)  # test-only: model init has no generator argument
    model = build_model(v.model)
    target = _save(tmp_path / "inpnet_tiny", 1, model)
    loaded, _ = ckpt.load_model(target)
    assert ckpt.weights_sha256(loaded) == ckpt.weights_sha256(model)
    with torch.no_grad():
        next(loaded.parameters()).view(-1)[0] += 1e-3
    assert ckpt.weights_sha256(loaded) != ckpt.weights_sha256(model)
