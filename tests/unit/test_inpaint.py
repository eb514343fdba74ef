"""Inference on arbitrary images: sizes, bit-exact known pixels, masks, folder mode, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.registry import StandIn, image_and_mask, make_checkpoint, real_build_available, tiny_variant
from PIL import Image

from inpnet.errors import DataError, MaskError
from inpnet.inpaint import Inpainter, inpaint_files, inpaint_folder, inpaint_image


@pytest.fixture(scope="module")
def inpainter() -> Inpainter:
    torch.manual_seed(0)  # test-only: weight init has no generator argument
    return Inpainter(StandIn(32), grid=32, family="inpnet").eval()


def _write(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _mask_png(hole: np.ndarray) -> np.ndarray:
    return np.where(hole, 255, 0).astype(np.uint8)


@pytest.mark.parametrize("size", [(97, 131), (20, 25), (32, 32), (70, 33)])
def test_any_size_keeps_size_and_known_pixels(inpainter: Inpainter, size: tuple[int, int]) -> None:
    image, hole = image_and_mask(*size)
    out = inpaint_image(inpainter, image, hole)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~hole], image[~hole])  # bit for bit
    assert not np.array_equal(out[hole], image[hole])  # the holes were filled by the model


def test_tiles_cover_every_hole_and_blend_overlaps() -> None:
    seen: list[tuple[int, ...]] = []

    class Constant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(image.shape))
            return torch.full_like(image, 0.25)

    inp = Inpainter(Constant(), grid=16, family="mae", overlap=4)
    image = torch.rand(2, 3, 40, 50)
    mask = torch.zeros(2, 1, 40, 50)
    mask[0, :, 30:38, 2:6] = 1  # one hole near the bottom-left corner
    pred = inp(image, mask)
    assert all(s[-2:] == (16, 16) for s in seen)
    assert torch.allclose(pred[mask.expand_as(pred) > 0], torch.tensor(0.25))
    # tiles without holes did not run: far from the hole the prediction is the input itself
    assert torch.equal(pred[:, :, :10, 30:], image[:, :, :10, 30:])


def test_empty_mask_returns_input_and_all_hole_is_refused(inpainter: Inpainter) -> None:
    image, hole = image_and_mask(40, 45)
    assert np.array_equal(inpaint_image(inpainter, image, np.zeros_like(hole)), image)
    with pytest.raises(MaskError, match="every pixel"):
        inpaint_image(inpainter, image, np.ones_like(hole))


def test_restoration_without_mask_is_inpnet_only(inpainter: Inpainter) -> None:
    image, _ = image_and_mask(45, 40)
    restored = inpaint_image(inpainter, image, None)
    assert restored.shape == image.shape and not np.array_equal(restored, image)
    other = Inpainter(inpainter.model, grid=32, family="cmgan")
    with pytest.raises(MaskError, match="required for the 'cmgan' family"):
        inpaint_image(other, image, None)


def test_files_invert_mask_and_bad_inputs_write_nothing(inpainter: Inpainter, tmp_path: Path) -> None:
    image, hole = image_and_mask(97, 131)
    img_p = _write(tmp_path / "img.jpg", image)
    decoded = np.asarray(Image.open(img_p).convert("RGB"))  # JPEG: compare with what was read
    inverted = _write(tmp_path / "inv.png", _mask_png(~hole))
    out = inpaint_files(inpainter, img_p, inverted, tmp_path / "out" / "a.png", invert_mask=True)
    result = np.asarray(Image.open(out))
    assert result.shape == image.shape and np.array_equal(result[~hole], decoded[~hole])

    small = _write(tmp_path / "small.png", _mask_png(hole[:50, :50]))
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"\x89PNG not really")
    cases = [
        (img_p, small, MaskError, "must match"),
        (corrupt, inverted, DataError, "not a readable image"),
        (img_p, corrupt, MaskError, "not a readable mask"),
        (tmp_path / "missing.png", inverted, DataError, "not found"),
    ]
    for img, msk, err, msg in cases:
        target = tmp_path / "never.png"
        with pytest.raises(err, match=msg):
            inpaint_files(inpainter, img, msk, target)
        assert not target.exists()
    with pytest.raises(DataError, match=r"\.png"):
        inpaint_files(inpainter, img_p, inverted, tmp_path / "x.jpg")


def test_folder_mode_pairs_by_stem_all_or_nothing(inpainter: Inpainter, tmp_path: Path) -> None:
    imgs, masks, out = tmp_path / "imgs", tmp_path / "masks", tmp_path / "out"
    imgs.mkdir(), masks.mkdir()
    for i, size in enumerate([(33, 47), (64, 64)]):
        image, hole = image_and_mask(*size, seed=i)
        _write(imgs / f"p{i}.png", image)
        _write(masks / f"p{i}.png", _mask_png(hole))
    written = inpaint_folder(inpainter, imgs, masks, out)
    assert [p.name for p in written] == ["p0.png", "p1.png"]
    assert np.asarray(Image.open(out / "p0.png")).shape == (33, 47, 3)

    (imgs / "p2.png").write_bytes(b"corrupt")
    _write(masks / "p2.png", _mask_png(np.zeros((8, 8), bool)))
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError, match=r"p2.png"):
        inpaint_folder(inpainter, imgs, masks, fresh)
    assert list(fresh.iterdir()) == []  # nothing written, not even p0/p1
    (masks / "p2.png").unlink()
    with pytest.raises(DataError, match="no mask with the stem"):
        inpaint_folder(inpainter, imgs, masks, fresh)


def test_cli_inpaint_from_checkpoint(tmp_path: Path) -> None:
    from inpnet.cli import main

    ckpt = make_checkpoint(tmp_path / "ckpt")
    image, hole = image_and_mask(97, 131)
    img_p = _write(tmp_path / "img.png", image)
    mask_p = _write(tmp_path / "mask.png", _mask_png(hole))
    out = tmp_path / "out.png"
    args = ["inpaint", "--model", str(ckpt), "--image", str(img_p), "--out", str(out)]
    assert main([*args, "--mask", str(mask_p)]) == 0
    result = np.asarray(Image.open(out))
    assert result.shape == image.shape and np.array_equal(result[~hole], image[~hole])
    assert main([*args[:-1], str(tmp_path / "restored.png")]) == 0  # InP-Net: no mask = restoration
    bad = _write(tmp_path / "full.png", np.full(hole.shape, 255, np.uint8))
    assert main([*args[:-1], str(tmp_path / "none.png"), "--mask", str(bad)]) == 2
    assert not (tmp_path / "none.png").exists()
    assert main(["inpaint", "--model", str(tmp_path / "nope"), "--image", str(img_p), "--out", str(out)]) == 2


@pytest.mark.skipif(not real_build_available(), reason="inpnet.models.build is not there yet")
@pytest.mark.parametrize("variant", ["inpnet_tiny", "mae_tiny", "cmgan_tiny"])
def test_every_family_tiles_odd_sizes(variant: str) -> None:
    from inpnet.models.build import build_model

    v = tiny_variant(variant)
    torch.manual_seed(0)  # test-only: weight init has no generator argument
    inp = Inpainter(build_model(v.model).eval(), grid=v.model.img_size, family=v.model.family)
    image, hole = image_and_mask(97, 131)
    out = inpaint_image(inp, image, hole)
    assert out.shape == image.shape and np.array_equal(out[~hole], image[~hole])


@pytest.mark.parametrize("side", [8000, 60000])  # under and over PIL's own decompression-bomb limit
def test_decompression_bombs_are_project_errors(inpainter: Inpainter, tmp_path: Path, side: int) -> None:
    from helpers.places_tar import claims_size, jpeg_bytes

    from inpnet.images import decode_image, decode_mask

    bomb = claims_size(jpeg_bytes(np.random.default_rng(0), 40, 40), side, side)
    with pytest.raises(DataError, match=r"bomb.jpg: image is .*over the limit of 50.0"):
        decode_image(bomb, source="bomb.jpg")
    with pytest.raises(MaskError, match=r"bomb.jpg: mask is .*over the limit"):
        decode_mask(bomb, source="bomb.jpg")
    (tmp_path / "bomb.jpg").write_bytes(bomb)
    with pytest.raises(DataError, match="over the limit"):
        inpaint_files(inpainter, tmp_path / "bomb.jpg", None, tmp_path / "out.png")


def test_cli_inpaint_into_an_unwritable_out_is_one_line_and_leaves_no_temp_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import cli_error_lines

    from inpnet.cli import main

    ckpt = make_checkpoint(tmp_path / "ckpt")
    image, hole = image_and_mask(40, 40)
    img_p, mask_p = _write(tmp_path / "img.png", image), _write(tmp_path / "mask.png", _mask_png(hole))
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "a-file").write_text("x")
    cases = {
        tmp_path / "folder.png": "a folder of that name exists",
        tmp_path / "a-file" / "x.png": "a file of that name exists where a folder is needed",
    }
    if Path("/sys/kernel").is_dir():  # even root cannot write /sys (chmod does not stop root)
        cases[Path("/sys/x.png")] = "cannot write"
    before = sorted(p.name for p in tmp_path.iterdir())
    for out, reason in cases.items():
        capsys.readouterr()
        code = main(["inpaint", "--model", str(ckpt), "--image", str(img_p), "--mask", str(mask_p), "--out", str(out)])
        lines = cli_error_lines(capsys.readouterr().err)
        assert (
            code == 2 and len(lines) == 1 and lines[0].startswith(f"inpnet: error: {out}: ") and reason in lines[0]
        ), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before and list((tmp_path / "folder.png").iterdir()) == []
    assert not Path("/sys/.x.png.tmp").exists()
