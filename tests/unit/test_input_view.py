"""What each family sees of the known pixels: MAE's patch view, InP-Net's patch-view ablation,
and the evaluation report's share of the known pixels a method cannot see."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.params import tiny_variant
from PIL import Image

from inpnet.config import EvalConfig, InpNetModelConfig
from inpnet.models.build import inference_settings, view_patch_size
from inpnet.models.inpnet import InpNet
from inpnet.models.patches import hidden_known_fraction, patch_view

SIZE = 32


def _blocks_any(hole: np.ndarray, p: int) -> np.ndarray:
    """The patch view written out pixel by pixel: True where the pixel's p x p block holds a hole pixel."""
    h, w = hole.shape
    out = np.zeros_like(hole)
    for y in range(0, h, p):
        for x in range(0, w, p):
            out[y : y + p, x : x + p] = hole[y : y + p, x : x + p].any()
    return out


def test_patch_view_grows_holes_to_whole_patches_and_counts_the_known_pixels_lost() -> None:
    rng = np.random.default_rng(0)
    hole = rng.random((3, SIZE, SIZE)) < 0.02  # scattered pixels: most patches partly masked
    hole[2] = False
    hole[2, 8:16, 16:24] = True  # patch-aligned: nothing known is lost
    mask = torch.from_numpy(hole)[:, None].float()  # (3, 1, S, S)
    grown = patch_view(mask, 8)[:, 0].numpy() > 0.5
    for i in range(3):
        np.testing.assert_array_equal(grown[i], _blocks_any(hole[i], 8))
    lost = hidden_known_fraction(mask, 8).numpy()
    for i in range(3):
        expected = (_blocks_any(hole[i], 8) & ~hole[i]).sum() / (~hole[i]).sum()
        assert lost[i] == pytest.approx(expected)
    assert lost[2] == 0.0 and lost[0] > 0.5
    one = torch.zeros(1, 1, SIZE, SIZE)
    one[0, 0, 0, 0] = 1  # one hole pixel hides the 63 other pixels of its patch
    assert float(hidden_known_fraction(one, 8)) == pytest.approx(63 / (SIZE * SIZE - 1))
    odd = torch.zeros(1, 1, 20, 20)
    odd[0, 0, 19, 19] = 1  # the last, partial patch (padded as the models pad) is hidden whole
    assert patch_view(odd, 8)[0, 0, 16:, 16:].all() and patch_view(odd, 8).sum() == 16


def test_which_models_see_patches() -> None:
    mae, inp = tiny_variant("mae_tiny").model, tiny_variant("inpnet_tiny").model
    assert isinstance(inp, InpNetModelConfig)
    assert view_patch_size(mae) == 8 and view_patch_size(inp) is None
    assert view_patch_size(inp.model_copy(update={"patch_view": True})) == 8
    assert view_patch_size(tiny_variant("cmgan_tiny").model) is None
    assert inference_settings(mae) == {"input_view": "patches", "view_patch_size": 8}
    assert inference_settings(inp)["input_view"] == "pixels"


@pytest.mark.parametrize("prefill", ["none", "harmonic"])
def test_inpnet_patch_view_hides_the_known_pixels_of_a_partly_masked_patch(prefill: str) -> None:
    """With patch_view the known pixels that share a patch with the hole cannot change the output;
    without it (the plain model) they do, through the mask channel."""
    kw = dict(img_size=SIZE, patch_size=8, embed_dim=32, depth=1, num_heads=2, decoder_channels=(16, 8))
    torch.manual_seed(0)
    plain = InpNet(**kw, prefill=prefill).eval()
    viewed = InpNet(**kw, prefill=prefill, patch_view=True).eval()
    viewed.load_state_dict(plain.state_dict())  # the same weights: only the view differs
    if prefill != "none":  # a zero head would make the output the pre-fill alone; give it weights
        torch.nn.init.normal_(plain.head.weight, std=0.1)
        viewed.load_state_dict(plain.state_dict())
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 10:14, 10:14] = 1  # inside patch (1, 1), which spans pixels 8..15
    other = image.clone()
    other[..., 8, 8] = 1 - other[..., 8, 8]  # a known pixel of that patch, outside the hole
    with torch.no_grad():
        a, b = viewed(image, mask), viewed(other, mask)
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the network never read the changed pixel
        assert not torch.equal(plain(image, mask), plain(other, mask))  # the plain model does read it
        far = image.clone()
        far[..., 30, 30] = 1 - far[..., 30, 30]  # a known pixel of a patch with no hole pixel: still seen
        assert not torch.equal(viewed(far, mask), a)


def _photos(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_the_evaluation_report_says_which_known_pixels_each_method_cannot_see(tmp_path: Path) -> None:
    from inpnet.evaluate.evaluator import evaluate
    from inpnet.evaluate.methods import ModelMethod
    from inpnet.images import read_mask_png
    from inpnet.masks import load_bank, write_bank

    images = _photos(tmp_path / "images", 2)
    bank = tmp_path / "bank"
    write_bank(bank, size=SIZE, patterns=["free_form", "center"], ratios=[0.1, 0.3], per_cell=2, seed=0)

    def grey(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.full_like(image, 0.5)

    cfg = EvalConfig(batch_size=4, grid_images=1, workers=1)
    reports = {}
    for name, info in (("patchy", {"input_view": "patches", "view_patch_size": 8}), ("pixel", {})):
        evaluate(ModelMethod(name, grey, info=info), images, bank, out_dir=tmp_path / name, cfg=cfg)
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    vis = reports["patchy"]["visibility"]
    assert vis["input_view"] == "patches" and vis["patch_size"] == 8
    by_cell: dict[tuple[str, str], list[float]] = {}
    for m in load_bank(bank):  # both images meet each cell's masks by image number % per_cell
        hole = read_mask_png(m.path)
        by_cell.setdefault((m.pattern, f"{m.ratio:.2f}"), []).append(
            float((_blocks_any(hole, 8) & ~hole).sum() / (~hole).sum())
        )
    for (pattern, ratio), values in by_cell.items():
        assert vis["buckets"][pattern][ratio]["hidden_known"] == pytest.approx(np.mean(values), abs=1e-6)
    assert vis["patterns"]["free_form"]["hidden_known"] > 0.05  # strokes cut through many patches
    assert reports["pixel"]["visibility"]["overall"]["hidden_known"] == 0.0
    assert reports["pixel"]["visibility"]["input_view"] == "pixels"
    gens = reports["pixel"]["masks"]["generators"]
    assert gens["free_form"]["options"] == {"preset": "mixed"} and gens["center"]["seed"] == 0
