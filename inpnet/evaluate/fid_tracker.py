"""FID overall and FID/KID per pattern x ratio bucket, accumulated while the evaluator runs.

Each distinct real image is added once, without a bucket, so it is the shared reference set
(with the mask bank every image is in every bucket anyway); composites are added to their
bucket. FID overall compares every composite with every real image; each bucket compares its
composites with the real images (KID is the better estimate there: buckets are small).
Without Inception weights nothing is computed: the results are None and the reason goes to
the report. Scoring is :class:`inpnet.evaluate.fid.FIDScorer`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inpnet.config import EvalConfig

if TYPE_CHECKING:
    import torch

    from inpnet.evaluate.fid import FIDScorer

__all__ = ["FidTracker"]

log = logging.getLogger(__name__)


class FidTracker:
    """Feeds a FIDScorer by bucket when weights are available; a no-op otherwise.

    Args:
        cfg: the ``evaluate`` section (``fid_weights``, ``kid_subset_size``).
        device: where Inception features are extracted.
    """

    def __init__(self, cfg: EvalConfig, *, device: str = "cpu") -> None:
        from inpnet.evaluate.fid import fid_available

        self.weights = cfg.fid_weights
        self.kid_subset_size = cfg.kid_subset_size
        self.device = device
        self.available, self.reason = fid_available(self.weights)
        if self.weights is None:
            self.reason = f"evaluate.fid_weights is not set: {self.reason}"
        self._scorer: FIDScorer | None = None
        self._seen: set[int] = set()
        if not self.available:
            log.info("FID/KID unavailable: %s", self.reason)

    def status(self) -> dict[str, Any]:
        """For report.json: whether FID/KID were computed, and why not."""
        return {
            "available": self.available,
            "reason": self.reason,
            "weights": self.weights,
            "kid_subset_size": self.kid_subset_size,
        }

    def update(self, pairs: Sequence[Any], real: torch.Tensor, fake: torch.Tensor) -> None:
        """Add a batch: ``pairs[i]`` has ``.image.number`` and ``.mask.pattern/.ratio``;
        real and fake are (B, 3, H, W) in [0, 1]."""
        if not self.available:
            return
        if self._scorer is None:
            from inpnet.evaluate.fid import FIDScorer

            self._scorer = FIDScorer.from_weights(self.weights, device=self.device)
        new: dict[int, int] = {}  # image number -> first batch row showing it
        for i, p in enumerate(pairs):
            if p.image.number not in self._seen and p.image.number not in new:
                new[p.image.number] = i
        if new:
            self._scorer.add_real(real[list(new.values())])
            self._seen.update(new)
        features = self._scorer.extractor(fake)  # (B, D), once for the whole batch
        by_bucket: dict[tuple[str, str], list[int]] = {}
        for i, p in enumerate(pairs):
            by_bucket.setdefault((p.mask.pattern, f"{p.mask.ratio:.2f}"), []).append(i)
        for bucket, rows in by_bucket.items():
            self._scorer.add_features(features[rows], real=False, bucket=bucket)

    def compute(self) -> dict[str, Any]:
        """``{"overall": fid|None, "buckets": {(pattern, ratio): {"fid", "kid"}}}``."""
        scorer = self._scorer
        if scorer is None or scorer.count() == 0:
            return {"overall": None, "buckets": {}}
        buckets = {}
        for bucket in scorer.buckets():
            enough = scorer.count(bucket) >= 2 and len(self._seen) >= 2
            buckets[bucket] = {
                "fid": _finite(scorer.fid(bucket)) if enough else None,
                "kid": _finite(scorer.kid(bucket, subset_size=self.kid_subset_size)[0]) if enough else None,
            }
        overall = _finite(scorer.fid(None)) if len(self._seen) >= 2 and scorer.count() >= 2 else None
        return {"overall": overall, "buckets": buckets}


def _finite(value: float) -> float | None:
    v = float(value)
    return round(v, 6) if v == v and abs(v) != float("inf") else None  # noqa: PLR0124 - v == v is False only for NaN
