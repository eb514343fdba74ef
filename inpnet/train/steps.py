"""Step objects: the model-specific work of one optimiser step, for every family.

A step receives the step's micro-batches (``grad_accum`` pairs of image (B,3,H,W) in [0,1]
and mask (B,1,H,W), 1 = hole), runs forward and backward on each and updates the weights
once. It returns the loss parts averaged over the micro-batches, detached, so that the
trainer can log them without knowing the family.

- :class:`ReconstructionStep`: the model and its reconstruction loss (InP-Net, MAE).
- :class:`AdversarialStep`: discriminator first, then generator, with separate optimisers,
  lazy R1 or a WGAN gradient penalty; used by the ``*_gan`` variants and by CM-GAN.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from inpnet.models.composite import composite
from inpnet.train.optim import Precision

if TYPE_CHECKING:
    from inpnet.losses import AdvKind

__all__ = ["AdversarialStep", "LossFn", "ReconstructionStep", "TrainStep", "Updater"]

Micro = list[tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class TrainStep(Protocol):
    updaters: dict[str, Updater]

    def __call__(self, micro: Micro, step: int) -> dict[str, torch.Tensor]: ...


class Updater:
    """Backward and optimiser step for one set of parameters: loss scaling, clipping, sync.

    Args:
        params: the raw (unwrapped) parameters this optimiser owns.
        sync: called before unscaling, to average gradients of modules not wrapped in DDP.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        *,
        scaler: torch.amp.GradScaler | None = None,
        grad_clip: float | None = None,
        sync: Callable[[], None] | None = None,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.optimizer = optimizer
        self.scaler = scaler
        self.grad_clip = grad_clip
        self.sync = sync

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated

    def step(self) -> torch.Tensor | None:
        """Apply the accumulated gradients; returns the pre-clip gradient norm when clipping."""
        if self.sync is not None:
            self.sync()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm


def _no_sync_unless_last(module: nn.Module, last: bool) -> AbstractContextManager[object]:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulation."""
    no_sync = getattr(module, "no_sync", None)  # DDP's, also through torch.compile's wrapper
    if not last and no_sync is not None:
        ctx: AbstractContextManager[object] = no_sync()
        return ctx
    return nullcontext()


def _accumulate(into: dict[str, torch.Tensor], parts: dict[str, torch.Tensor], n: int) -> None:
    for key, value in parts.items():
        v = value.detach().float() / n
        into[key] = into[key] + v if key in into else v


class ReconstructionStep:
    """Forward, reconstruction loss, backward; one optimiser step per call."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, updater: Updater, precision: Precision) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.updaters = {"model": updater}
        self.precision = precision

    def __call__(self, micro: Micro, step: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        n = len(micro)
        for i, (image, mask) in enumerate(micro):
            with _no_sync_unless_last(self.model, i == n - 1):
                with self.precision.autocast():
                    pred = self.model(image, mask)
                # losses in fp32: autocast's bf16 sums lose the small late-training values
                total, parts = self.loss_fn(image, mask, pred.float())
                self.updaters["model"].backward(total / n)
            _accumulate(out, {"total": total, **parts}, n)
        norm = self.updaters["model"].step()
        if norm is not None:
            out["grad_norm"] = norm.detach().float()
        return out


class AdversarialStep:
    """Discriminator step, then generator step (reconstruction + weighted adversarial term).

    The discriminator scores the composite (known pixels from the image, holes from the
    generator) together with the mask. R1 is lazy: applied every ``r1_every`` D steps and
    scaled by ``r1_every`` so its average strength matches an every-step penalty.

    Args:
        generator: possibly DDP-wrapped or compiled generator.
        discriminator: the raw discriminator (never DDP-wrapped; ``d_updater.sync`` averages
            its gradients, because DDP cannot run the penalty's double backward).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss_fn: LossFn,
        g_updater: Updater,
        d_updater: Updater,
        precision: Precision,
        *,
        adv_loss: AdvKind,
        adv_weight: float,
        r1_gamma: float = 0.0,
        r1_every: int = 16,
        r1_masked: bool = False,
        gp_weight: float = 10.0,
    ) -> None:
        self.generator = generator
        self.discriminator = discriminator
        self.loss_fn = loss_fn
        self.updaters = {"model": g_updater, "disc": d_updater}
        self.precision = precision
        self.adv_loss = adv_loss
        self.adv_weight = adv_weight
        self.r1_gamma = r1_gamma
        self.r1_every = r1_every
        self.r1_masked = r1_masked
        self.gp_weight = gp_weight

    def _d_micro(self, image: torch.Tensor, mask: torch.Tensor, step: int, n: int) -> dict[str, torch.Tensor]:
        from inpnet import losses

        with torch.no_grad(), self.precision.autocast():
            fake = self.generator(image, mask)
        fake = composite(image, mask, fake.float())
        with self.precision.autocast():
            real_scores = self.discriminator(image, mask)
            fake_scores = self.discriminator(fake, mask)
        d_loss = losses.d_loss(self.adv_loss, real_scores.float(), fake_scores.float())
        parts = {"d_loss": d_loss}
        total = d_loss
        if self.adv_loss == "wgan_gp" and self.gp_weight > 0:
            gp = losses.gradient_penalty(self.discriminator, image, fake, mask)
            parts["d_gp"] = gp
            total = total + self.gp_weight * gp
        if self.r1_gamma > 0 and step % self.r1_every == 0:
            r1 = losses.r1_penalty(self.discriminator, image, mask, masked=self.r1_masked)
            parts["d_r1"] = r1
            total = total + 0.5 * self.r1_gamma * self.r1_every * r1
        self.updaters["disc"].backward(total / n)
        return parts

    def _g_micro(self, image: torch.Tensor, mask: torch.Tensor, last: bool, n: int) -> dict[str, torch.Tensor]:
        from inpnet import losses

        with _no_sync_unless_last(self.generator, last):
            with self.precision.autocast():
                pred = self.generator(image, mask)
            pred = pred.float()
            rec, parts = self.loss_fn(image, mask, pred)
            with self.precision.autocast():
                fake_scores = self.discriminator(composite(image, mask, pred), mask)
            g_adv = losses.g_loss(self.adv_loss, fake_scores.float())
            total = rec + self.adv_weight * g_adv
            self.updaters["model"].backward(total / n)
        return {"total": total, "rec": rec, "g_adv": g_adv, **parts}

    def __call__(self, micro: Micro, step: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        n = len(micro)
        self.discriminator.requires_grad_(True)
        for image, mask in micro:
            _accumulate(out, self._d_micro(image, mask, step, n), n)
        self.updaters["disc"].step()
        # D is frozen for the G step: no wasted D gradients, and none leak into its optimiser
        self.discriminator.requires_grad_(False)
        try:
            for i, (image, mask) in enumerate(micro):
                _accumulate(out, self._g_micro(image, mask, i == n - 1, n), n)
        finally:
            self.discriminator.requires_grad_(True)
        norm = self.updaters["model"].step()
        if norm is not None:
            out["grad_norm"] = norm.detach().float()
        return out
