"""FID / KID: the Fréchet distance against SciPy, KID against its definition, end-to-end plumbing.

The end-to-end tests use randomly initialised feature extractors: they check the plumbing
(quantisation, batching, buckets, weights loading), never a real score.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from inpnet.errors import DataError
from inpnet.evaluate.fid import (
    FIDScorer,
    InceptionFeatures,
    fid_available,
    frechet_distance,
    kernel_inception_distance,
    kid_mean_std,
    sqrtm_psd,
)


def _features(seed: int, n: int = 300, d: int = 48, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features, like a network's
    return rng.normal(size=(n, d)) @ mix + shift


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The pytorch-fid reference formula with SciPy's sqrtm, float64."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy() -> None:
    a, b = _features(0), _features(1, n=200, shift=0.3)
    ref = _scipy_fid(a, b)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(b, a) == pytest.approx(ref, rel=1e-9)


def test_singular_covariances_use_the_eigh_route(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _features(7, n=30), _features(8, n=30, shift=0.2)  # 30 samples, 48 dims: rank-deficient
    ref = _scipy_fid(a, b)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)

    def no_cholesky(_: np.ndarray) -> np.ndarray:
        raise np.linalg.LinAlgError("not positive definite")

    monkeypatch.setattr(np.linalg, "cholesky", no_cholesky)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    c, d = _features(0), _features(1, n=200, shift=0.3)
    assert frechet_distance(c, d) == pytest.approx(_scipy_fid(c, d), rel=1e-9)


def test_sqrtm_psd_matches_scipy() -> None:
    cov = np.cov(_features(2), rowvar=False)
    root = sqrtm_psd(cov)
    np.testing.assert_allclose(root, sqrtm(cov).real, atol=1e-10)
    np.testing.assert_allclose(root @ root, cov, atol=1e-10)


def _naive_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out pair by pair (Bińkowski et al.)."""
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_matches_the_definition_and_is_seeded() -> None:
    a, b = _features(3, n=12, d=8), _features(4, n=12, d=8, shift=0.5)
    assert kernel_inception_distance(a, b, subset_size=12) == pytest.approx(_naive_kid(a, b), rel=1e-9)
    m1 = kid_mean_std(_features(5), _features(6, shift=0.5), subset_size=20, n_subsets=10, seed=1)
    m2 = kid_mean_std(_features(5), _features(6, shift=0.5), subset_size=20, n_subsets=10, seed=1)
    assert m1 == m2 and m1[0] > 0 and m1[1] > 0


def test_fid_unavailable_without_weights(tmp_path: Path) -> None:
    ok, reason = fid_available(None)
    assert not ok and "fid_weights" in reason
    ok, reason = fid_available(tmp_path / "nope.pth")
    assert not ok and "nope.pth" in reason
    (tmp_path / "empty.pth").write_bytes(b"")
    assert not fid_available(tmp_path / "empty.pth")[0]
    with pytest.raises(DataError, match=r"^FID unavailable: "):
        FIDScorer.from_weights(None)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert fid_available(tmp_path / "junk.pth")[0]  # cheap check passes; loading says why it fails
    with pytest.raises(DataError, match=r"FID unavailable: .*junk.pth do not load"):
        FIDScorer.from_weights(tmp_path / "junk.pth")


class _TinyNet(torch.nn.Module):
    """uint8 images -> 16 random-conv features: stands in for InceptionV3."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dtype == torch.uint8
        return self.conv(x.float() / 255).relu().mean(dim=(2, 3))  # (B, 16)


def test_fid_scorer_end_to_end_with_buckets() -> None:
    scorer = FIDScorer(InceptionFeatures(None, model=_TinyNet()))
    g = torch.Generator().manual_seed(0)
    real = torch.rand(24, 3, 32, 32, generator=g)
    scorer.add_real(real)
    scorer.add_fake(real[:12], bucket=("center", "0.10"))  # perfect outputs
    scorer.add_fake(real[12:] * 0.3, bucket=("center", "0.50"))  # dark outputs
    assert scorer.buckets() == [("center", "0.10"), ("center", "0.50")]
    assert scorer.count() == 24 and scorer.count(("center", "0.10")) == 12 and scorer.count(real=True) == 24
    good, bad = scorer.fid(("center", "0.10")), scorer.fid(("center", "0.50"))
    assert 0 <= good < bad and np.isfinite(scorer.fid())
    kid_mean, _ = scorer.kid(("center", "0.50"), subset_size=8, n_subsets=5)
    assert kid_mean > scorer.kid(("center", "0.10"), subset_size=8, n_subsets=5)[0]
    with pytest.raises(ValueError, match="no fake"):
        scorer.fid(("edges", "0.10"))


@pytest.mark.slow
def test_inception_weights_load_from_a_local_file(tmp_path: Path) -> None:
    """The real InceptionV3 architecture, random weights saved to a file: loading and 2048-d features."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    empty = mock.patch.object(fe, "load_state_dict_from_url", return_value={})
    with empty, mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):  # noqa: PT008 - binds as a method
        random_net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])  # keeps its random init
    weights = tmp_path / "random_inception.pth"
    torch.save(random_net.state_dict(), weights)
    del random_net
    with mock.patch.object(fe, "load_state_dict_from_url", side_effect=AssertionError("must not download")):
        scorer = FIDScorer.from_weights(weights)
    scorer.add_real(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))  # one 299 px forward
    feats = scorer.features(real=True)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()  # a 2048-d FID of 2 images would say nothing
