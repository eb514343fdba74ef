"""FID and KID from InceptionV3 pool features, with weights only from a local file.

Features are the standard 2048-d pool3 activations of the TF-ported InceptionV3
(``pt_inception-2015-12-05``) computed by torch-fidelity's ``FeatureExtractorInceptionV3``
(the extractor torchmetrics wraps too), fed 8-bit images and resized the TensorFlow way,
so scores match the published FID protocol. Weights are never downloaded here: without a
readable local file :func:`fid_available` says why and :meth:`FIDScorer.from_weights`
raises ``DataError("FID unavailable: <reason>")``; no number is ever made up.

The Fréchet distance is computed in float64 from the feature means and covariances; the
trace of the matrix square root comes from the eigenvalues of a symmetric matrix similar to
``S1 S2`` (``tr sqrt(S1 S2) = sum sqrt(eig(L^T S2 L))`` with ``S1 = L L^T``), which equals
SciPy's ``sqrtm`` route (tested) and is several times faster on 2048 x 2048. KID is the unbiased MMD^2 with the
cubic polynomial kernel, averaged over seeded random subsets: the better estimate for the
small per-bucket sets.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import torch

from inpnet.errors import DataError

__all__ = [
    "FIDScorer",
    "InceptionFeatures",
    "fid_available",
    "frechet_distance",
    "frechet_distance_stats",
    "kernel_inception_distance",
    "kid_mean_std",
    "sqrtm_psd",
]

log = logging.getLogger(__name__)

FEATURE_DIM = 2048
WEIGHTS_HINT = "pt_inception-2015-12-05-6726825d.pth (set evaluate.fid_weights or run `inpnet weights fetch`)"


def fid_available(weights_path: str | Path | None) -> tuple[bool, str]:
    """Whether FID can be computed with these weights, and the reason when it cannot.

    Checks without loading the 100 MB model: the path is set, is a non-empty file, and
    torch-fidelity is importable. A file that then fails to load raises from
    :class:`InceptionFeatures` with the reason.
    """
    if weights_path is None or str(weights_path) == "":
        return False, f"no Inception weights configured; need a local {WEIGHTS_HINT}"
    path = Path(weights_path)
    if not path.is_file():
        return False, f"Inception weights {path} not found; need a local {WEIGHTS_HINT}"
    if path.stat().st_size == 0:
        return False, f"Inception weights {path} is empty; fetch it again"
    if importlib.util.find_spec("torch_fidelity") is None:
        return False, "torch-fidelity is not installed"
    return True, "ok"


# ----------------------------------------------------------------------------- features


class InceptionFeatures:
    """Callable: float images (B, 3, H, W) in [0, 1] -> (B, D) float32 features on CPU.

    Images are quantised to uint8 (as FID expects saved images) and moved to ``device``.
    ``model`` replaces InceptionV3 by any module mapping uint8 (B, 3, H, W) to (B, D) or to a
    tuple whose first item is that (tests use a random network: plumbing, not a score).
    """

    def __init__(
        self,
        weights_path: str | Path | None,
        *,
        device: str | torch.device = "cpu",
        model: torch.nn.Module | None = None,
    ) -> None:
        self.device = torch.device(device)
        if model is None:
            model = _load_inception(weights_path)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"features need (B, 3, H, W) images, got {tuple(images.shape)}")
        u8 = torch.round(images.clamp(0, 1) * 255).to(torch.uint8).to(self.device)
        out = self.model(u8)
        feats: torch.Tensor = out[0] if isinstance(out, (tuple, list)) else out
        return feats.reshape(feats.shape[0], -1).float().cpu()  # (B, D)


def _load_inception(weights_path: str | Path | None) -> torch.nn.Module:
    ok, reason = fid_available(weights_path)
    if not ok or weights_path is None:  # fid_available refuses None
        raise DataError(f"FID unavailable: {reason}")
    try:
        # a safe (tensors-only) read first: a foreign or truncated file fails here with its reason
        # before torch-fidelity unpickles it
        torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types; all become one DataError
        raise _load_failure(weights_path, err) from None
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:
        net: torch.nn.Module = FeatureExtractorInceptionV3(  # torch-fidelity is untyped
            "inception-v3-compat", [str(FEATURE_DIM)], feature_extractor_weights_path=str(weights_path)
        )
        return net
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file fails in torch.load / load_state_dict
        raise _load_failure(weights_path, err) from None


def _load_failure(path: str | Path | None, err: Exception) -> DataError:
    first_line = (str(err).strip().splitlines() or [repr(err)])[0]
    return DataError(f"FID unavailable: Inception weights {path} do not load ({type(err).__name__}: {first_line})")


# ------------------------------------------------------------------- Fréchet distance


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via ``eigh`` (float64).

    Tiny negative eigenvalues from rounding are clipped to zero.
    """
    a = np.asarray(a, dtype=np.float64)
    w, v = np.linalg.eigh((a + a.T) / 2)
    root: np.ndarray = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return root


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(S1 S2)`` as ``sum sqrt(eig(A))`` with a symmetric PSD ``A`` similar to ``S1 S2``.

    With ``S1 = L L^T`` (Cholesky), ``A = L^T S2 L``; a singular ``S1`` (fewer samples than
    dimensions) has no Cholesky factor and uses ``A = S1^1/2 S2 S1^1/2`` from ``eigh`` instead.
    Only eigenvalues of ``A`` are needed, which is what makes this fast.
    """
    try:
        factor = np.linalg.cholesky(sigma1)
        inner = factor.T @ sigma2 @ factor
    except np.linalg.LinAlgError:
        root1 = sqrtm_psd(sigma1)
        inner = root1 @ sigma2 @ root1
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)`` in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"Fréchet distance: shapes differ: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}"
        )
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2))


def _stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = _as_f64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature statistics need an (N >= 2, D) matrix, got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)  # (D,), (D, D), unbiased like pytorch-fid


def frechet_distance(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """FID between two feature matrices (N, D) and (M, D)."""
    return frechet_distance_stats(*_stats(real), *_stats(fake))


def _as_f64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


# ------------------------------------------------------------------------------- KID


def _poly_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 between (m, d) and (n, d)."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
    )


def kid_mean_std(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    *,
    subset_size: int = 50,
    n_subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID mean and std over ``n_subsets`` seeded subsets of ``min(subset_size, N, M)`` rows."""
    x, y = _as_f64(real), _as_f64(fake)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 real and 2 fake features, got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    # with the whole set in one subset every draw is the same: compute it once
    draws = 1 if m == len(x) == len(y) else n_subsets
    vals = [
        _poly_mmd(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
        for _ in range(draws)
    ]
    return float(np.mean(vals)), float(np.std(vals))


def kernel_inception_distance(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    *,
    subset_size: int = 50,
    n_subsets: int = 100,
    seed: int = 0,
) -> float:
    """KID (mean over subsets) between two feature matrices; see :func:`kid_mean_std`."""
    return kid_mean_std(real, fake, subset_size=subset_size, n_subsets=n_subsets, seed=seed)[0]


# ---------------------------------------------------------------------------- scorer


class FIDScorer:
    """Accumulates real and fake features, optionally by bucket, and scores FID / KID.

    Real images form the reference set: those added with a bucket are that bucket's
    reference, those added without one are shared by every bucket. ``fid(None)`` compares
    every fake with every real feature (add each real image once, without a bucket, to keep
    it from counting twice); ``fid(bucket)`` compares the bucket's fakes with its own reals,
    else with the shared reals, else with all reals.
    """

    def __init__(self, extractor: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.extractor = extractor
        self._real: dict[Hashable | None, list[np.ndarray]] = {}
        self._fake: dict[Hashable | None, list[np.ndarray]] = {}

    @classmethod
    def from_weights(cls, weights_path: str | Path | None, *, device: str | torch.device = "cpu") -> FIDScorer:
        """A scorer on InceptionV3 from a local file; ``DataError("FID unavailable: ...")`` without one."""
        return cls(InceptionFeatures(weights_path, device=device))

    def add_real(self, images: torch.Tensor, bucket: Hashable | None = None) -> None:
        """Add ground-truth images (B, 3, H, W) in [0, 1]."""
        self.add_features(self.extractor(images), real=True, bucket=bucket)

    def add_fake(self, images: torch.Tensor, bucket: Hashable | None = None) -> None:
        """Add method outputs (composites) (B, 3, H, W) in [0, 1]."""
        self.add_features(self.extractor(images), real=False, bucket=bucket)

    def add_features(self, features: np.ndarray | torch.Tensor, *, real: bool, bucket: Hashable | None = None) -> None:
        """Add precomputed (B, D) features."""
        store = self._real if real else self._fake
        store.setdefault(bucket, []).append(_as_f64(features).astype(np.float32))

    def buckets(self) -> list[Hashable]:
        """Buckets that hold fake features."""
        return [b for b in self._fake if b is not None]

    def features(self, bucket: Hashable | None = None, *, real: bool = False) -> np.ndarray:
        """The stored (N, D) float32 features of a bucket (None: all buckets)."""
        store = self._real if real else self._fake
        chunks = [f for c in store.values() for f in c] if bucket is None else store.get(bucket, [])
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

    def count(self, bucket: Hashable | None = None, *, real: bool = False) -> int:
        """Number of features in a bucket (None: all)."""
        return len(self.features(bucket, real=real))

    def fid(self, bucket: Hashable | None = None) -> float:
        """FID of ``bucket``'s fakes (None: all fakes) against its reference set."""
        real, fake = self._pair(bucket)
        return frechet_distance(real, fake)

    def kid(
        self, bucket: Hashable | None = None, *, subset_size: int = 50, n_subsets: int = 100, seed: int = 0
    ) -> tuple[float, float]:
        """KID (mean, std) for ``bucket`` (None: all)."""
        real, fake = self._pair(bucket)
        return kid_mean_std(real, fake, subset_size=subset_size, n_subsets=n_subsets, seed=seed)

    def _pair(self, bucket: Hashable | None) -> tuple[np.ndarray, np.ndarray]:
        every_real = [f for chunks in self._real.values() for f in chunks]
        if bucket is None:
            fake = [f for chunks in self._fake.values() for f in chunks]
            real = every_real
        else:
            fake = self._fake.get(bucket, [])
            real = self._real.get(bucket) or self._real.get(None) or every_real
        if not fake or not real:
            raise ValueError(f"no {'fake' if not fake else 'real'} features for bucket {bucket!r}")
        return np.concatenate(real), np.concatenate(fake)
