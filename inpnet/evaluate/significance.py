"""Is one method really ahead of another? Paired bootstrap confidence intervals.

Every method of a comparison is scored on the same (image, mask) pairs, so the difference
between two methods is measured pair by pair: ``d_i = score_a(pair_i) - score_b(pair_i)``.
Resampling the pairs with replacement (``n_boot`` times, seeded) and taking the mean of each
resample gives the bootstrap distribution of the mean difference; its 2.5 and 97.5
percentiles are the 95% interval (Efron and Tibshirani, *An Introduction to the Bootstrap*,
ch. 13, the percentile interval). Pairing removes the variation between images that both
methods share, which is most of it: two methods 0.2 dB apart on the same 36 pairs can be
clearly apart although each one's own spread is several dB.

A cell is ``ahead`` only when the whole interval is above zero, ``behind`` when it is below,
and ``tie`` otherwise; a mean difference under :data:`RESOLUTION` (what the tables' two
decimals show as 0.00) is a ``tie`` however narrow its interval, since a model that copies
its pre-fill up to rounding is not "ahead" of it in any sense a reader would take.
Pairs either method left out (an empty or full hole, an exact match) are left out of the
difference too.

Several training seeds of one method: its score on a pair is the mean of that pair's scores
over the seed runs (:func:`mean_pair_scores`, on the pairs every run scored), and the
bootstrap runs over pairs as before. The interval then says how sure the difference is over
the choice of images and masks for this set of seeds; how much the seeds themselves differ
is the compare report's seed spread (mean, std, min-max) and its per-seed differences.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inpnet.errors import DataError

__all__ = ["Difference", "PairScores", "differences", "mean_pair_scores", "paired_bootstrap", "read_pair_scores"]

RESOLUTION = 0.005  # dB: below this a difference prints as +0.00 and is called a tie
PairKey = tuple[str, str, str, str]  # image, pattern, ratio bucket, mask
PairScores = dict[PairKey, float]  # one method's score per pair
Verdict = Literal["ahead", "behind", "tie"]


@dataclass(frozen=True)
class Difference:
    """``a - b`` on ``metric`` over the pairs of one pattern (``ratio`` None: all its buckets)."""

    a: str
    b: str
    metric: str
    pattern: str
    ratio: str | None
    mean: float
    low: float
    high: float
    n: int

    @property
    def verdict(self) -> Verdict:
        if abs(self.mean) < RESOLUTION:
            return "tie"
        if self.low > 0:
            return "ahead"
        if self.high < 0:
            return "behind"
        return "tie"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def paired_bootstrap(
    diffs: Sequence[float] | np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``diffs`` and its percentile bootstrap interval."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"need a non-empty 1-D array of paired differences, got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("paired differences must be finite (leave out pairs with an infinite PSNR)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)  # (n_boot,)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(d.mean()), float(low), float(high)


def read_pair_scores(folder: Path, metric: str) -> dict[PairKey, float]:
    """``metric`` per scored pair from an evaluation's ``per_image.csv`` (excluded pairs left out)."""
    path = Path(folder) / "per_image.csv"
    if not path.is_file():
        raise DataError(f"{path}: missing; the paired comparison needs each method's per-pair scores")
    scores: dict[PairKey, float] = {}
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if row.get("excluded"):
                continue
            try:
                key = (row["image"], row["pattern"], row["ratio"], row["mask"])
                value = float(row[metric])
            except (KeyError, ValueError) as err:
                raise DataError(f"{path}:{line}: no readable {metric!r} ({err}); re-run the evaluation") from None
            if math.isfinite(value):
                scores[key] = value
    return scores


def mean_pair_scores(runs: Sequence[PairScores]) -> PairScores:
    """Each pair's mean score over ``runs`` (one method's seed runs), on the pairs every run scored."""
    if not runs:
        raise ValueError("need at least one run's pair scores")
    if len(runs) == 1:
        return dict(runs[0])
    shared = set(runs[0]).intersection(*runs[1:])
    return {k: sum(r[k] for r in runs) / len(runs) for k in sorted(shared)}


def differences(
    scores: dict[str, dict[PairKey, float]],
    pairs: Sequence[tuple[str, str]],
    *,
    metric: str = "psnr",
    n_boot: int = 2000,
    seed: int = 0,
) -> list[Difference]:
    """``a - b`` for each (a, b) in ``pairs``, per pattern and per ratio bucket, on shared pairs."""
    out: list[Difference] = []
    for a, b in pairs:
        shared = sorted(scores[a].keys() & scores[b].keys())
        by_cell: dict[tuple[str, str | None], list[float]] = {}
        for key in shared:
            d = scores[a][key] - scores[b][key]
            by_cell.setdefault((key[1], None), []).append(d)
            by_cell.setdefault((key[1], key[2]), []).append(d)
        for (pattern, ratio), ds in sorted(by_cell.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            mean, low, high = paired_bootstrap(ds, n_boot=n_boot, seed=seed)
            out.append(Difference(a, b, metric, pattern, ratio, mean, low, high, len(ds)))
    return out
