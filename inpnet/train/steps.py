"""One optimiser step, for every family, and the builder that picks the family's recipe.

A step receives the step's micro-batches (``grad_accum`` pairs of image (B,3,H,W) in [0,1]
and mask (B,1,H,W), 1 = hole), runs forward and backward on each and updates the weights
once. It returns the loss parts averaged over the micro-batches, detached, so that the
trainer can log them without knowing the family. A step owns everything that is specific
to its kind of training: its optimisers (:class:`Updater`, each with its learning-rate
schedule), the modules it trains beside the model (``modules``, checkpointed by name) and
any noise it draws.

- :class:`ReconstructionStep`: the model and its reconstruction loss (InP-Net, MAE).
- :class:`AdversarialStep`: discriminator first (with lazy R1 as its own optimiser step, or a
  WGAN gradient penalty), then generator, with separate optimisers; used by the ``*_gan``
  variants and by CM-GAN, whose noise it draws from a seeded generator of its own.

:func:`build_step` turns a resolved variant into one of them, with the family's recipe:
AdamW + cosine for the ViT families, Adam without decay + constant learning rate for CM-GAN
(StyleGAN2's), and StyleGAN2's lazy-regularisation adjustment for a discriminator with R1.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from inpnet.models.composite import composite
from inpnet.train.optim import (
    VIT_WEIGHT_DECAY,
    LRSchedule,
    Precision,
    adam,
    adamw,
    lazy_regularised,
    peak_lr,
    set_lr,
)

if TYPE_CHECKING:
    from inpnet.config import ResolvedVariant
    from inpnet.losses import AdvKind
    from inpnet.models.discriminators import Discriminator
    from inpnet.train.distributed import DistInfo

__all__ = [
    "GAN_FAMILIES",
    "AdversarialStep",
    "LossFn",
    "ReconstructionStep",
    "StepNoise",
    "TrainStep",
    "Updater",
    "build_step",
    "generator_optimiser",
    "variant_peak_lr",
]

Micro = list[tuple[torch.Tensor, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]

# Families trained as GANs from the ground up (StyleGAN2's recipe); the others are ViTs that
# may add an adversarial term (``*_gan``) but keep their own optimiser and schedule.
GAN_FAMILIES = ("cmgan",)


class TrainStep(Protocol):
    """What the trainer calls: ``step(micro, step) -> parts``; ``updaters`` and ``modules`` are
    checkpointed by name ("model" is the generator's updater)."""

    updaters: dict[str, Updater]
    modules: dict[str, nn.Module]

    def __call__(self, micro: Micro, step: int) -> dict[str, torch.Tensor]: ...


class Updater:
    """Backward and optimiser step for one set of parameters: schedule, loss scaling, clipping, sync.

    Args:
        params: the raw (unwrapped) parameters this optimiser owns.
        schedule: the learning rate per step (:meth:`set_lr`); None leaves it to the caller.
        sync: called before unscaling, to average gradients of modules not wrapped in DDP.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        *,
        schedule: LRSchedule | None = None,
        scaler: torch.amp.GradScaler | None = None,
        grad_clip: float | None = None,
        sync: Callable[[], None] | None = None,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.optimizer = optimizer
        self.schedule = schedule
        self.scaler = scaler
        self.grad_clip = grad_clip
        self.sync = sync

    def set_lr(self, step: int, total_steps: int) -> float | None:
        """Apply the schedule's learning rate for ``step``; returns it (None without a schedule)."""
        if self.schedule is None:
            return None
        lr = self.schedule.at(step, total_steps)
        set_lr(self.optimizer, lr)
        return lr

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


class StepNoise:
    """A generator for models that draw noise while training (CM-GAN's z and per-layer noise),
    reseeded at every step from (seed, step, rank), so a resumed run draws exactly the noise
    an uninterrupted one would have, and ranks draw different noise."""

    def __init__(self, seed: int, *, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> None:
        self.seed, self.rank, self.world_size = seed, rank, max(world_size, 1)
        self.generator = torch.Generator(device=torch.device(device))

    def at(self, step: int) -> torch.Generator:
        self.generator.manual_seed((self.seed * 1_000_003 + step) * self.world_size + self.rank)
        return self.generator


def _forward(model: nn.Module, image: torch.Tensor, mask: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """``model(image, mask)``, with ``generator=gen`` for a model that draws noise."""
    out: torch.Tensor = model(image, mask) if gen is None else model(image, mask, generator=gen)
    return out


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
    """Forward, reconstruction loss, backward; one optimiser step per call.

    ``noise``: the model's noise source, for a model that draws noise (None: it draws none).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        updater: Updater,
        precision: Precision,
        *,
        noise: StepNoise | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.updaters = {"model": updater}
        self.modules: dict[str, nn.Module] = {}
        self.precision = precision
        self.noise = noise

    def __call__(self, micro: Micro, step: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        n = len(micro)
        gen = self.noise.at(step) if self.noise is not None else None
        for i, (image, mask) in enumerate(micro):
            with _no_sync_unless_last(self.model, i == n - 1):
                with self.precision.autocast():
                    pred = _forward(self.model, image, mask, gen)
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
    generator) together with the mask. R1 is lazy, as in StyleGAN2: every ``r1_every`` steps
    it is its own discriminator optimiser step, scaled by ``r1_every`` so that its average
    strength matches an every-step penalty (the optimiser's lr and betas carry the matching
    adjustment, :func:`~inpnet.train.optim.lazy_regularised`).

    Args:
        generator: possibly DDP-wrapped or compiled generator.
        discriminator: the raw discriminator (never DDP-wrapped; ``d_updater.sync`` averages
            its gradients, because DDP cannot run the penalty's double backward).
        noise: the generator's noise source; its ``torch.Generator`` goes to the generator's
            forward as ``generator=`` (None: a generator that draws no noise).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: Discriminator,
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
        noise: StepNoise | None = None,
    ) -> None:
        self.generator = generator
        self.discriminator = discriminator
        self.loss_fn = loss_fn
        self.updaters = {"model": g_updater, "disc": d_updater}
        self.modules: dict[str, nn.Module] = {"disc": discriminator}
        self.precision = precision
        self.adv_loss = adv_loss
        self.adv_weight = adv_weight
        self.r1_gamma = r1_gamma
        self.r1_every = r1_every
        self.r1_masked = r1_masked
        self.gp_weight = gp_weight
        self.noise = noise
        self._gen: torch.Generator | None = None  # this step's, set by __call__

    def _d_micro(self, image: torch.Tensor, mask: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        from inpnet import losses

        with torch.no_grad(), self.precision.autocast():
            fake = _forward(self.generator, image, mask, self._gen)
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
        self.updaters["disc"].backward(total / n)
        return parts

    def _r1_micro(self, image: torch.Tensor, mask: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        from inpnet import losses

        r1 = losses.r1_penalty(self.discriminator, image, mask, masked=self.r1_masked)
        self.updaters["disc"].backward(0.5 * self.r1_gamma * self.r1_every * r1 / n)
        return {"d_r1": r1}

    def _g_micro(self, image: torch.Tensor, mask: torch.Tensor, last: bool, n: int) -> dict[str, torch.Tensor]:
        from inpnet import losses

        with _no_sync_unless_last(self.generator, last):
            with self.precision.autocast():
                pred = _forward(self.generator, image, mask, self._gen)
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
        self._gen = self.noise.at(step) if self.noise is not None else None
        self.discriminator.requires_grad_(True)
        for image, mask in micro:
            _accumulate(out, self._d_micro(image, mask, n), n)
        self.updaters["disc"].step()
        if self.r1_gamma > 0 and step % self.r1_every == 0:  # lazy R1: its own D step
            for image, mask in micro:
                _accumulate(out, self._r1_micro(image, mask, n), n)
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


# ----------------------------------------------------------------------------- building


def variant_peak_lr(variant: ResolvedVariant, world_size: int) -> float:
    """The generator's peak learning rate: ``train.lr`` under ``train.lr_scaling`` (:func:`peak_lr`)."""
    cfg = variant.train
    return peak_lr(cfg.lr, cfg.lr_scaling, batch_size=cfg.batch_size, world_size=world_size, grad_accum=cfg.grad_accum)


def generator_optimiser(
    variant: ResolvedVariant, model: nn.Module, *, world_size: int = 1
) -> tuple[torch.optim.Optimizer, LRSchedule]:
    """The family's optimiser and schedule for the model (the generator, in adversarial runs).

    CM-GAN (:data:`GAN_FAMILIES`): Adam, no weight decay, constant learning rate after the
    warm-up (StyleGAN2, CM-GAN). InP-Net and MAE: AdamW with ``train.weight_decay`` (default
    0.05) on weights only, warm-up + cosine (MAE, ViT). The peak is :func:`variant_peak_lr`
    for ``world_size`` processes.
    """
    cfg = variant.train
    lr = variant_peak_lr(variant, world_size)
    if variant.model.family in GAN_FAMILIES:
        return adam(model, lr=lr, betas=cfg.betas), LRSchedule(lr, cfg.warmup_steps, "constant")
    decay = VIT_WEIGHT_DECAY if cfg.weight_decay is None else cfg.weight_decay
    opt = adamw(model, lr=lr, weight_decay=decay, betas=cfg.betas)
    return opt, LRSchedule(lr, cfg.warmup_steps, "cosine")


def build_step(
    variant: ResolvedVariant, model: nn.Module, forward_model: nn.Module, precision: Precision, info: DistInfo
) -> TrainStep:
    """The variant's step: reconstruction, or adversarial when ``train.loss.adv_weight > 0``.

    Args:
        model: the raw generator (its parameters go to the optimiser).
        forward_model: the view of ``model`` to call (DDP-wrapped and/or compiled).
    """
    from inpnet.losses import build_loss
    from inpnet.models.build import build_discriminator
    from inpnet.train.distributed import all_reduce_grads

    cfg, loss = variant.train, variant.train.loss
    g_opt, g_schedule = generator_optimiser(variant, model, world_size=info.world_size)
    g_upd = Updater(
        list(model.parameters()), g_opt, schedule=g_schedule, scaler=precision.scaler(), grad_clip=cfg.grad_clip
    )
    loss_fn = build_loss(variant.model, loss)
    gan = variant.model.family in GAN_FAMILIES
    # CM-GAN's forward draws z and per-layer noise from an explicit generator
    noise = StepNoise(cfg.seed, rank=info.rank, world_size=info.world_size, device=info.device) if gan else None
    if loss.adv_weight <= 0:
        return ReconstructionStep(forward_model, loss_fn, g_upd, precision, noise=noise)
    disc = build_discriminator(loss.disc.kind, img_size=cfg.image_size, base_channels=loss.disc.channels)
    disc = disc.to(info.device)
    if info.is_distributed:  # the discriminator is not DDP-wrapped: start every rank from rank 0's weights
        for t in disc.state_dict().values():
            torch.distributed.broadcast(t, src=0)
    d_lr, d_betas = cfg.disc_lr, cfg.betas
    if loss.r1_gamma > 0:
        d_lr, d_betas = lazy_regularised(d_lr, d_betas, loss.r1_every)
    d_params = list(disc.parameters())
    d_upd = Updater(
        d_params,
        adam(disc, lr=d_lr, betas=d_betas),
        schedule=LRSchedule(d_lr, cfg.warmup_steps, g_schedule.kind),
        scaler=precision.scaler(),
        sync=lambda: all_reduce_grads(d_params, info),
    )
    return AdversarialStep(
        forward_model,
        disc,
        loss_fn,
        g_upd,
        d_upd,
        precision,
        adv_loss=loss.adv_loss,
        adv_weight=loss.adv_weight,
        r1_gamma=loss.r1_gamma,
        r1_every=loss.r1_every,
        r1_masked=gan if loss.r1_masked is None else loss.r1_masked,  # masked R1: CM-GAN's choice
        gp_weight=loss.gp_weight,
        noise=noise,
    )
