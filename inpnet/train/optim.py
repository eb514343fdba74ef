"""Optimisers, learning-rate schedules, weight EMA and mixed precision for the trainer.

Two recipes: the ViT families (InP-Net, MAE) train with AdamW (no decay on biases, norms
and tokens) and a linear warm-up + cosine schedule; CM-GAN, like StyleGAN2, with plain
Adam, no weight decay and a constant learning rate. A discriminator with lazy R1 gets
StyleGAN2's adjustment (:func:`lazy_regularised`). A schedule is a pure function of the
step, so resuming needs only the step count, never a pickled scheduler object.
:func:`peak_lr` applies ``train.lr_scaling`` (MAE's linear rule for the ViT-B variants).
"""

from __future__ import annotations

import copy
import logging
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = [
    "EMA",
    "VIT_WEIGHT_DECAY",
    "LRSchedule",
    "Precision",
    "adam",
    "adamw",
    "lazy_regularised",
    "lr_at",
    "peak_lr",
    "resolve_precision",
    "set_lr",
]


VIT_WEIGHT_DECAY = 0.05  # AdamW decay of the ViT families when train.weight_decay is None (MAE's)


def _fused(params: list[nn.Parameter]) -> bool | None:
    return (all(p.is_cuda for p in params) and bool(params)) or None


def adamw(
    module: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float], fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases, norms, embeddings' 1-d params and tokens.

    Parameters with fewer than two dimensions (biases, LayerNorm/GroupNorm scales) and
    learned tokens/position embeddings (names containing ``token`` or ``pos_embed``) are
    not decayed, as in MAE and nanoGPT.
    """
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "token" in name or "pos_embed" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=_fused(decay + no_decay) if fused is None else fused)


def adam(module: nn.Module, *, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Plain Adam with no weight decay (StyleGAN2, CM-GAN): per-layer learning-rate multipliers
    such as the mapping network's 0.01 then scale every update, decay included (there is none)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=0.0, fused=_fused(params))


def lazy_regularised(lr: float, betas: tuple[float, float], every: int) -> tuple[float, tuple[float, float]]:
    """StyleGAN2's adjustment for a regulariser applied as its own optimiser step every ``every``
    steps: with c = every / (every + 1), lr * c and betas ** c keep the optimiser's step size
    and momentum horizon per minibatch as without the extra steps."""
    c = every / (every + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)


def peak_lr(lr: float, scaling: str, *, batch_size: int, world_size: int, grad_accum: int) -> float:
    """The peak learning rate the schedule reaches.

    ``scaling="none"``: ``lr`` itself. ``"linear"``: MAE's rule (Goyal et al.'s linear scaling),
    ``lr * global_batch / 256`` with ``lr`` the base lr per 256 images and ``global_batch =
    batch_size * world_size * grad_accum``, the images behind one optimiser step, so the
    recipe holds whatever the number of GPUs or the accumulation.
    """
    if scaling == "none":
        return lr
    if scaling == "linear":
        return lr * batch_size * world_size * grad_accum / 256
    raise ValueError(f"train.lr_scaling must be 'none' or 'linear', got {scaling!r}")


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate as a function of the step: ``cosine`` (:func:`lr_at`) or ``constant``
    (the same linear warm-up, then ``peak`` for good)."""

    peak: float
    warmup_steps: int
    kind: Literal["cosine", "constant"] = "cosine"
    min_ratio: float = 0.1

    def at(self, step: int, total_steps: int) -> float:
        if self.kind == "constant":
            if self.warmup_steps > 0 and step < self.warmup_steps:
                return self.peak * (step + 1) / self.warmup_steps
            return self.peak
        return lr_at(
            step, peak=self.peak, warmup_steps=self.warmup_steps, total_steps=total_steps, min_ratio=self.min_ratio
        )


def lr_at(step: int, *, peak: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up, then cosine.

    The warm-up starts at ``peak / warmup_steps`` (never 0, so step 0 already learns) and
    the cosine decays to ``min_ratio * peak`` at ``total_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    floor = peak * min_ratio
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied).

    The shadow is a frozen deep copy in eval mode; it is what evaluation and export use
    when the variant sets ``ema_decay``.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        ema_params: list[torch.Tensor] = list(self.module.parameters())
        live_params = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(ema_params, live_params, 1.0 - self.decay)
        for ema_b, live_b in zip(self.module.buffers(), module.buffers(), strict=True):
            ema_b.copy_(live_b)


# ------------------------------------------------------------------------- precision


@dataclass(frozen=True)
class Precision:
    """Resolved autocast settings: ``dtype`` None means plain fp32."""

    name: str
    device_type: str
    dtype: torch.dtype | None

    @property
    def needs_scaler(self) -> bool:
        """fp16 needs loss scaling; bf16 has fp32's exponent range and does not."""
        return self.dtype is torch.float16

    def autocast(self) -> AbstractContextManager[object]:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.needs_scaler else None


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 matmuls natively: AMX tiles or AVX512-BF16.

    On such CPUs (Sapphire Rapids, AMD Zen 4 and later) bf16 autocast trains a ViT 2-3x
    faster than fp32 (bench/train.py); elsewhere bf16 is emulated and slower.
    """
    for probe_name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        probe = getattr(torch.cpu, probe_name, None)
        if probe is None:
            continue
        try:
            if probe():
                return True
        except RuntimeError:
            continue
    return "AMX" in torch.backends.cpu.get_cpu_capability().upper()


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """Map ``train.precision`` (auto|fp32|bf16|fp16) to autocast settings for ``device``.

    auto: bf16 on GPUs that support it, else fp16 with a gradient scaler; on CPU bf16 when
    the CPU has native bf16 (AMX or AVX512-BF16), else fp32.
    """
    kind = device.type
    if requested == "fp32":
        return Precision("fp32", kind, None)
    if requested == "auto":
        if kind == "cuda":
            requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif kind == "cpu":
            requested = "bf16" if cpu_has_fast_bf16() else "fp32"
        else:
            requested = "fp32"
        if requested == "fp32":
            return Precision("fp32", kind, None)
    if requested == "fp16" and kind == "cpu":
        log.warning("precision fp16 on CPU has no speed benefit; using bf16 autocast instead")
        requested = "bf16"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(requested)
    if dtype is None:
        raise ValueError(f"train.precision must be auto, fp32, bf16 or fp16, got {requested!r}")
    return Precision(requested, kind, dtype)
