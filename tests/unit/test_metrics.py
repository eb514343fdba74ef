"""PSNR and SSIM against scikit-image on real photos with realistic distortions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from inpnet.evaluate.metrics import hole_psnr, mean_colour_fill, psnr, quantize, ssim


def _photos(size: int = 96) -> list[np.ndarray]:
    """Crops of photographs that scikit-image ships, float64 (H, W, 3) in [0, 1]."""
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = getattr(data, name)()
        out.append(img[40 : 40 + size, 60 : 60 + size].astype(np.float64) / 255.0)
    return out


def _distortions(img: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    noisy = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    blurred = ndimage.gaussian_filter(img, sigma=(1.5, 1.5, 0))
    _ok, buf = cv2.imencode(".jpg", np.round(img * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 20])
    jpeg = cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float64) / 255.0
    filled = img.copy()
    filled[20:70, 30:80] = img.mean(axis=(0, 1))  # a hole filled with the mean colour, as a crude inpainting
    return [np.round(d * 255) / 255 for d in (noisy, blurred, jpeg, filled)]  # 8-bit, as the evaluator scores


def _t(batch: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()  # (B, H, W, 3) -> (B, 3, H, W)


def test_psnr_and_ssim_match_scikit_image_on_photos() -> None:
    rng = np.random.default_rng(0)
    preds, targets = [], []
    for img in _photos():
        for d in _distortions(img, rng):
            preds.append(d)
            targets.append(img)
    got_ssim = ssim(_t(preds), _t(targets))
    got_psnr = psnr(_t(preds), _t(targets))
    assert got_ssim.shape == got_psnr.shape == (len(preds),)
    for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
        ref_ssim = structural_similarity(
            t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1
        )
        ref_psnr = peak_signal_noise_ratio(t, p, data_range=1)
        assert abs(got_ssim[i].item() - ref_ssim) < 1e-4, (i, got_ssim[i].item(), ref_ssim)
        assert abs(got_psnr[i].item() - ref_psnr) < 1e-3, (i, got_psnr[i].item(), ref_psnr)
    assert got_ssim.min() < 0.9  # the distortions are real, not near-identities


def test_identical_images() -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(2))
    assert torch.isinf(psnr(x, x)).all()


def test_ssim_is_per_image_in_a_batch() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 3, 24, 24, generator=g), torch.rand(3, 3, 24, 24, generator=g)
    batched = ssim(a, b)
    single = torch.stack([ssim(a[i : i + 1], b[i : i + 1])[0] for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-6)


def test_quantize_rounds_to_8_bits_and_clamps() -> None:
    x = torch.tensor([-0.2, 0.0, 0.5, 0.7001, 1.3])
    q = quantize(x)
    assert torch.equal(q * 255, torch.round(q * 255))
    assert q[0] == 0 and q[-1] == 1 and q[2] == 128 / 255
    assert torch.equal(quantize(q), q)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="pred and target"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(4, 3, 64, 64, generator=g), torch.rand(4, 3, 64, 64, generator=g)
    assert torch.allclose(ssim(a.cuda(), b.cuda()).cpu(), ssim(a, b), atol=1e-5)
    assert torch.allclose(psnr(a.cuda(), b.cuda()).cpu(), psnr(a, b), atol=1e-4)


def test_hole_psnr_counts_only_hole_pixels_and_flat_fill() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 16, 16, generator=g)
    mask = torch.zeros(3, 1, 16, 16)
    mask[0, :, 4:8, 4:8] = 1
    mask[1, :, :, :8] = 1  # mask[2]: no hole
    pred = target.clone()
    pred[:, :, 4:8, 4:8] += 0.1  # error inside image 0's hole only; image 1's hole half of it
    pred[:, :, 12:, 12:] = 0.0  # error outside every hole: ignored
    got = hole_psnr(pred, target, mask)
    assert got[0] == pytest.approx(20.0, abs=1e-4)  # mse 0.01 over the hole
    assert got[1] == pytest.approx(10 * np.log10(1 / (0.01 * 16 / 128)), abs=1e-4)
    assert torch.isnan(got[2])
    flat = mean_colour_fill(target, mask)
    known = target[1][:, :, 8:].mean(dim=(1, 2))  # (3,) the known half's mean colour
    assert torch.allclose(flat[1, :, 0, 0], known) and torch.equal(flat[1, :, :, 8:], target[1, :, :, 8:])
    assert torch.equal(flat[2], target[2])
