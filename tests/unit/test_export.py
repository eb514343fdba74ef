"""ONNX and TorchScript export: every family matches PyTorch, known pixels exact, the CLI, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.registry import image_and_mask, make_checkpoint, tiny_variant
from PIL import Image
from torch import nn

from inpnet.config import ResolvedVariant
from inpnet.errors import ConfigError, ShapeError
from inpnet.export import ExportedModel, ExportError, export_module
from inpnet.models.build import build_model
from inpnet.models.composite import composite

TOLERANCE = 1e-4


def _model(name: str, prefill: str | None = None) -> tuple[nn.Module, ResolvedVariant]:
    variant = tiny_variant(name)
    cfg = variant.model if prefill is None else variant.model.model_copy(update={"prefill": prefill})
    torch.manual_seed(0)  # test-only: weight init has no generator argument
    return build_model(cfg, pretrained=False).eval(), variant


def _export(tmp: Path, name: str, fmt: str, *, prefill: str | None = None, **kw: object) -> tuple[Path, nn.Module]:
    model, variant = _model(name, prefill)
    path = export_module(
        model, tmp, fmt=fmt, family=variant.model.family, variant=variant.name, img_size=variant.model.img_size, **kw
    )
    return path, model


def _inputs(batch: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=gen)
    # a box of random size per image and sparse specks: the number of fully known patches (what
    # MAE's encoder sees) differs between images and from the traced example
    mask = (torch.rand(batch, 1, height, width, generator=gen) > 0.995).float()
    for i in range(batch):
        h, w = (int(v) for v in torch.randint(4, height // 2, (2,), generator=gen))
        mask[i, :, 2 : 2 + h, 3 : 3 + w] = 1.0
    return image, mask


def _check_against_pytorch(path: Path, model: nn.Module, batch: int, size: tuple[int, int]) -> None:
    meta = json.loads((path.parent / "export.json").read_text())
    assert meta["size"] == list(size) and meta["file"] == path.name
    exported = ExportedModel(path, meta)
    for seed in (11, 12):  # inputs the graph was not traced on
        image, mask = _inputs(batch, *size, seed=seed)
        with torch.no_grad():
            expected = composite(image, mask, model(image, mask).clamp(0, 1))
        got = exported(image, mask)
        assert got.shape == image.shape
        assert float((got - expected).abs().max()) <= TOLERANCE
        known = (mask < 0.5).expand_as(image)
        assert torch.equal(got[known], image[known])  # bit for bit
        assert not torch.equal(got[~known], image[~known])  # the holes were filled


# ----------------------------------------------------------------- equivalence (slow)


TWO_SIZES = [(32, 32), (48, 64)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "prefill", "sizes", "fmt"),
    [
        *[("inpnet_tiny", "pushpull", TWO_SIZES, fmt) for fmt in ("onnx", "torchscript")],
        *[("mae_tiny", None, TWO_SIZES, fmt) for fmt in ("onnx", "torchscript")],
        *[("cmgan_tiny", None, [(32, 32)], fmt) for fmt in ("onnx", "torchscript")],  # its img_size only
        # the harmonic fill unrolls about 100 red-black sweeps: the ONNX export folds constants only
        *[("inpnet_tiny", "harmonic", [(32, 32)], fmt) for fmt in ("onnx", "torchscript")],
    ],
)
def test_export_matches_pytorch(
    tmp_path: Path, name: str, prefill: str | None, sizes: list[tuple[int, int]], fmt: str
) -> None:
    dynamic = fmt == "onnx" and name != "cmgan_tiny"
    for size in sizes:
        path, model = _export(tmp_path / f"{size[0]}x{size[1]}", name, fmt, prefill=prefill, size=size, dynamic=dynamic)
        meta = json.loads((path.parent / "export.json").read_text())
        assert meta["family"] == name.split("_", maxsplit=1)[0] and meta["format"] == fmt
        assert meta["parity_max_abs"] <= TOLERANCE and len(meta["weights_sha256"]) == 64
        assert meta["opset"] == (18 if fmt == "onnx" else None)
        if fmt == "onnx":  # the harmonic fill's unrolled sweeps are too big for the whole optimiser
            assert meta["onnx_optimization"].startswith("constant" if prefill == "harmonic" else "onnxscript")
        # batch 3: a dynamic batch axis, or a fixed batch 1 run in chunks
        _check_against_pytorch(path, model, 3, size)


@pytest.mark.slow
def test_inpaint_with_onnx_file_matches_checkpoint(tmp_path: Path) -> None:
    from inpnet.cli import main

    ckpt = make_checkpoint(tmp_path / "ckpt", variant="inpnet_tiny")
    image, hole = image_and_mask(45, 70)
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(np.where(hole, 255, 0).astype(np.uint8)).save(tmp_path / "mask.png")
    assert main(["export", "--model", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    onnx_file = tmp_path / "onnx" / "model.onnx"
    meta = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert meta["variant"] == "inpnet_tiny" and meta["source"] == str(ckpt) and meta["size"] == [32, 32]
    outs = {}
    for key, model in (("ckpt", ckpt), ("onnx", onnx_file)):
        out = tmp_path / f"{key}.png"
        args = ["inpaint", "--model", str(model), "--image", str(tmp_path / "img.png")]
        assert main([*args, "--mask", str(tmp_path / "mask.png"), "--out", str(out)]) == 0
        outs[key] = np.asarray(Image.open(out)).astype(int)
    assert np.abs(outs["onnx"] - outs["ckpt"]).max() <= 1  # within 1/255
    assert np.array_equal(outs["onnx"][~hole], image[~hole])
    assert not np.array_equal(outs["onnx"][hole], image[hole])


# --------------------------------------------------------------------- bad input (fast)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--format 'tflite'.*onnx, torchscript"):
        _export(tmp_path, "inpnet_tiny", "tflite")
    assert not any(tmp_path.iterdir())


def test_telea_prefill_is_refused_with_the_variant_and_reason(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"'inpnet_tiny' uses prefill 'telea'.*OpenCV"):
        _export(tmp_path, "inpnet_tiny", "onnx", prefill="telea")


@pytest.mark.parametrize(
    ("name", "size", "match"),
    [
        ("inpnet_tiny", (30, 32), r"--size 30 32.*multiples of its patch size 8"),
        ("mae_tiny", (32, 36), r"--size 32 36.*multiples of its patch size 8"),
        ("cmgan_tiny", (64, 64), r"--size 64 64.*runs at 32x32 only"),
        ("inpnet_tiny", (0, 32), r"must be positive"),
    ],
)
def test_bad_sizes_are_refused(tmp_path: Path, name: str, size: tuple[int, int], match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        _export(tmp_path, name, "onnx", size=size)


@pytest.mark.parametrize(("name", "fmt"), [("cmgan_tiny", "onnx"), ("inpnet_tiny", "torchscript")])
def test_dynamic_batch_is_refused_where_the_graph_fixes_it(tmp_path: Path, name: str, fmt: str) -> None:
    with pytest.raises(ConfigError, match="--dynamic"):
        _export(tmp_path, name, fmt, dynamic=True)


def test_cli_reports_a_bad_format_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from inpnet.cli import main

    ckpt = make_checkpoint(tmp_path / "ckpt", variant="inpnet_tiny")
    assert main(["export", "--model", str(ckpt), "--format", "tflite", "--out", str(tmp_path / "o")]) == 2
    assert "tflite" in capsys.readouterr().err


def test_registry_export_refuses_telea_before_writing(tmp_path: Path) -> None:
    from inpnet.export import export_variant_onnx

    model, variant = _model("inpnet_tiny", "telea")
    with pytest.raises(ExportError, match="telea"):
        export_variant_onnx(model, variant, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
