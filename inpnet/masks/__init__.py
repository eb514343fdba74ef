"""Holes: generated patterns, training mask samplers and the fixed evaluation mask bank.

Convention: a mask is a bool (H, W) array or a float (B, 1, H, W) tensor of 0/1 with
**True / 1 = hole**. Every generator is a pure function of ``(height, width, ratio, rng)``
(plus preset keyword arguments): the same arguments and the same generator state give the
same mask, and nothing reads the global RNG.

Patterns and what the hole ratio means for each:

- ``random``: MAE-style patches on a grid (``patch_size`` px, shrunk so the grid has at least
  8 x 8 cells); cells are taken in a random order until the hole is closest to ``ratio``.
- ``center``: one block in the middle; ``jitter`` varies its aspect ratio around the image's.
- ``corners``: four equal blocks in the corners, each at most half the image in each direction.
- ``edges``: a border band around a centered known rectangle.
- ``free_form``: brush strokes and boxes (thin / medium / thick, see :mod:`inpnet.masks.freeform`);
  ``preset="mixed"`` picks one of the three per mask.
- ``external``: masks read from a folder (see :mod:`inpnet.masks.bank`), not generated.

Modules, in the order the data flows:

- :mod:`~inpnet.masks.patterns`: the generated patterns and :func:`make_mask`;
- :mod:`~inpnet.masks.freeform`: LaMa-style strokes and boxes (the ``free_form`` pattern);
- :mod:`~inpnet.masks.mixture`: :class:`MaskMixture`, the training masks, and the hole-ratio warm-up;
- :mod:`~inpnet.masks.objects`: CM-GAN's object-aware training masks;
- :mod:`~inpnet.masks.bank`: the fixed, seeded evaluation mask bank on disk.

Mask files are read and written by :mod:`inpnet.images` (``read_mask_png``, ``encode_mask_png``).

The geometric patterns hit the requested ratio within 0.02 (tested for every pattern at
several ratios and sizes >= 32 px); free-form aims at it and the achieved ratio is measured.
"""

from inpnet.masks.bank import BankMask, load_bank, write_bank
from inpnet.masks.mixture import (
    MaskMixture,
    describe_training_masks,
    ramp_max_ratio,
    stable_id_seed,
    training_mask_rng,
)
from inpnet.masks.patterns import GEOMETRIC_PATTERNS, MAX_RATIO, PATTERNS, make_mask

__all__ = [
    "GEOMETRIC_PATTERNS",
    "MAX_RATIO",
    "PATTERNS",
    "BankMask",
    "MaskMixture",
    "describe_training_masks",
    "load_bank",
    "make_mask",
    "ramp_max_ratio",
    "stable_id_seed",
    "training_mask_rng",
    "write_bank",
]
