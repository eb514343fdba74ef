"""Named, weighted loss terms. Composite losses return ``(total, parts)``.

``parts`` maps a term's name to its detached, *unweighted* scalar value, ready for logging;
``total`` is the weighted sum that is back-propagated. Masks are (B, 1, H, W), 1 = hole.

Reconstruction
    :func:`reconstruction_loss`: MSE or L1 on hole pixels and on known pixels, each averaged
    over its own pixels (so a small hole weighs as much as a large one), with weights from
    :class:`~inpnet.config.LossConfig`. :func:`masked_patch_loss`: the MAE objective.

Perceptual
    :func:`perceptual_loss`: the L1 distance of frozen VGG-19 features
    (:mod:`inpnet.models.vgg`) of the raw prediction and the image, per layer weighted by
    :data:`PERCEPTUAL_LAYER_WEIGHTS`; :class:`WithPerceptual` adds it to a family's
    reconstruction loss when ``loss.perceptual_weight`` > 0 and the weights file is there
    (:func:`perceptual_status` says which, once per run).

Adversarial (building blocks returning a scalar tensor; the trainer's adversarial step
weights and combines them)
    :func:`d_loss`, :func:`g_loss` for ``nonsaturating`` (softplus, as StyleGAN2), ``hinge``
    and ``wgan_gp`` (critic scores, plus :func:`gradient_penalty`); :func:`r1_penalty`,
    optionally masked to the hole region.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from inpnet.models.composite import check_image_mask
from inpnet.models.patches import known_patch_stats, patch_mask, patchify

if TYPE_CHECKING:
    from inpnet.config import CMGANModelConfig, InpNetModelConfig, LossConfig, MAEModelConfig
    from inpnet.models.discriminators import Discriminator
    from inpnet.models.vgg import VGG19Features

log = logging.getLogger(__name__)

__all__ = [
    "PERCEPTUAL_LAYER_WEIGHTS",
    "AdvKind",
    "LossFn",
    "MAELoss",
    "PixelLoss",
    "RecKind",
    "WithPerceptual",
    "build_loss",
    "d_loss",
    "g_loss",
    "gradient_penalty",
    "masked_patch_loss",
    "perceptual_loss",
    "perceptual_status",
    "r1_penalty",
    "reconstruction_loss",
]

RecKind = Literal["mse", "l1"]
AdvKind = Literal["nonsaturating", "hinge", "wgan_gp"]
_ADV_KINDS = ("nonsaturating", "hinge", "wgan_gp")

LossOut = tuple[torch.Tensor, dict[str, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], LossOut]


def _elementwise(kind: RecKind, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "mse":
        return (pred - target).square()
    if kind == "l1":
        return (pred - target).abs()
    raise ValueError(f"reconstruction kind must be 'mse' or 'l1', got {kind!r}")


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``weight`` is 1 (broadcast over channels); 0 when nothing is selected."""
    weight = weight.expand_as(values)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


# ----------------------------------------------------------------------- reconstruction


def reconstruction_loss(
    image: torch.Tensor,
    mask: torch.Tensor,
    prediction: torch.Tensor,
    *,
    kind: RecKind = "mse",
    hole_weight: float = 1.0,
    valid_weight: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pixel loss on the hole and on the known region of the raw prediction.

    Returns ``total = hole_weight * hole + valid_weight * valid`` and parts
    ``{"<kind>_hole", "<kind>_valid"}``. With an empty hole (ratio 0) the hole term is 0 and
    the valid term is the whole-image reconstruction loss.
    """
    err = _elementwise(kind, prediction, image)  # (B, 3, H, W)
    hole = (mask > 0.5).to(err.dtype)  # (B, 1, H, W)
    hole_term = _masked_mean(err, hole)
    valid_term = _masked_mean(err, 1.0 - hole)
    total = hole_weight * hole_term + valid_weight * valid_term
    return total, {f"{kind}_hole": hole_term.detach(), f"{kind}_valid": valid_term.detach()}


def masked_patch_loss(
    image: torch.Tensor,
    mask: torch.Tensor,
    prediction: torch.Tensor,
    *,
    patch_size: int,
    norm_pix: bool = False,
    pixel_mean: Sequence[float] = (0.0, 0.0, 0.0),
    pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
    kind: RecKind = "mse",
    weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The MAE objective: per-patch mean error, averaged over masked patches only.

    A patch is masked when it holds any hole pixel (as the MAE model decides). Without
    ``norm_pix`` the error is taken on the [0, 1] pixels. With ``norm_pix`` it is MAE's
    norm-pix loss: in the model's input space ``(x - pixel_mean) / pixel_std``, each
    *target* patch t is normalised by its own statistics, ``(t - mean_t) / sqrt(var_t + 1e-6)``,
    and compared with the decoder's raw output n. An inpainter must output pixels, so the
    model writes ``n * std_k + mean_k`` with (mean_k, std_k) from the known pixels
    (:func:`~inpnet.models.patches.known_patch_stats`); the same statistics, computed here
    from the image and mask, recover n exactly. Parts: ``{"mae_<kind>": ...}``.
    """
    masked = patch_mask(mask, patch_size)  # (B, L)
    if norm_pix:
        mean = image.new_tensor(pixel_mean).view(1, 3, 1, 1)
        std = image.new_tensor(pixel_std).view(1, 3, 1, 1)
        x = (image - mean) / std
        target = patchify(x, patch_size)  # (B, L, p*p*3)
        target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1.0e-6).sqrt()
        known_mean, known_std = known_patch_stats(x, mask, patch_size)  # (B, L, 1) each, no gradient
        pred = (patchify((prediction - mean) / std, patch_size) - known_mean) / known_std  # the decoder's n
    else:
        target = patchify(image, patch_size)  # (B, L, p*p*3)
        pred = patchify(prediction, patch_size)  # (B, L, p*p*3)
    per_patch = _elementwise(kind, pred, target).mean(dim=-1)  # (B, L)
    weights = masked.to(per_patch.dtype)
    term = (per_patch * weights).sum() / weights.sum().clamp_min(1.0)
    return weight * term, {f"mae_{kind}": term.detach()}


# -------------------------------------------------------------------------- perceptual

# pix2pixHD / SPADE's VGG feature loss: the deeper the layer, the larger its weight
PERCEPTUAL_LAYER_WEIGHTS: dict[str, float] = {
    "relu1_1": 1 / 32,
    "relu2_1": 1 / 16,
    "relu3_1": 1 / 8,
    "relu4_1": 1 / 4,
    "relu5_1": 1.0,
}


def perceptual_loss(
    features: VGG19Features,
    prediction: torch.Tensor,
    image: torch.Tensor,
    *,
    layer_weights: Sequence[float] = tuple(PERCEPTUAL_LAYER_WEIGHTS.values()),
) -> torch.Tensor:
    """sum_l w_l * mean |phi_l(prediction) - phi_l(image)| over the layers of ``features``.

    Computed in fp32 with autocast off (bf16 features of near-identical images differ by
    rounding alone); the target's features carry no graph. Zero for identical images.
    """
    if len(layer_weights) != len(features.layers):
        raise ValueError(f"{len(layer_weights)} layer weights for {len(features.layers)} layers {features.layers}")
    features.to(prediction.device)
    with torch.autocast(device_type=prediction.device.type, enabled=False):
        with torch.no_grad():
            target = features(image.float())
        pred = features(prediction.float())
        terms = [w * (p - t).abs().mean() for w, p, t in zip(layer_weights, pred, target, strict=True)]
    return torch.stack(terms).sum()


class WithPerceptual:
    """A family's loss plus ``weight`` x :func:`perceptual_loss` of the raw prediction (part ``perceptual``).

    The raw prediction, not the composite, as LaMa's perceptual losses: the known region of the
    output is then held to the image's features too.
    """

    def __init__(self, base: LossFn, features: VGG19Features, weight: float) -> None:
        self.base, self.features, self.weight = base, features, weight

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, prediction: torch.Tensor) -> LossOut:
        total, parts = self.base(image, mask, prediction)
        term = perceptual_loss(self.features, prediction, image)
        return total + self.weight * term, {**parts, "perceptual": term.detach()}


def perceptual_status(cfg: LossConfig) -> tuple[bool, str | None]:
    """(on, what the run records): whether :func:`build_loss` adds the perceptual term.

    ``(False, None)`` when ``loss.perceptual_weight`` is 0; ``(False, reason)`` when the weight
    is set but the weights file is not given or not there (the term is off, the reason says
    what is missing); ``(True, description)`` otherwise.
    """
    if cfg.perceptual_weight <= 0:
        return False, None
    fetch = "`inpnet weights fetch --name vgg19 --dest weights/`"
    path = cfg.perceptual_weights_path
    if not path:
        return False, (
            f"off: loss.perceptual_weight {cfg.perceptual_weight} but no loss.perceptual_weights_path; "
            f"fetch VGG-19 with {fetch} and set the path and loss.perceptual_weights_sha256"
        )
    if not Path(path).is_file():
        return False, f"off: loss.perceptual_weights_path {path} does not exist; fetch it with {fetch}"
    layers = ",".join(PERCEPTUAL_LAYER_WEIGHTS)
    return (
        True,
        f"on: VGG-19 {layers} from {path} (sha256 {cfg.perceptual_weights_sha256}), weight {cfg.perceptual_weight}",
    )


# ------------------------------------------------------------------------- adversarial


def _check_kind(kind: str) -> None:
    if kind not in _ADV_KINDS:
        raise ValueError(f"adversarial loss kind must be one of {_ADV_KINDS}, got {kind!r}")


def d_loss(kind: AdvKind, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Discriminator loss on score maps of any shape (B, ...), averaged over every score.

    nonsaturating: softplus(-real) + softplus(fake); hinge: relu(1 - real) + relu(1 + fake);
    wgan_gp: fake - real (add :func:`gradient_penalty` separately).
    """
    _check_kind(kind)
    if kind == "nonsaturating":
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()
    return fake_scores.mean() - real_scores.mean()


def g_loss(kind: AdvKind, fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator's adversarial loss: softplus(-fake) (nonsaturating) or -fake (hinge, wgan_gp)."""
    _check_kind(kind)
    if kind == "nonsaturating":
        return F.softplus(-fake_scores).mean()
    return -fake_scores.mean()


def _input_gradient(d: Discriminator, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """d(sum of D's scores)/dx in D's own input space x = ``d.to_input(image)``, with a graph
    so that the penalty can be back-propagated.

    StyleGAN2 takes R1 on the [-1, 1] image it feeds D; differentiating with respect to the
    [0, 1] image instead would scale the squared gradient by 4 (``r1_gamma: 10`` acting as 40).
    """
    check_image_mask(image, mask)
    x = d.to_input(image.detach()).detach().requires_grad_(True)
    scores = d.score(x, mask)
    (grad,) = torch.autograd.grad(scores.float().sum(), x, create_graph=True)
    return grad  # (B, 3, H, W)


def r1_penalty(d: Discriminator, real_image: torch.Tensor, mask: torch.Tensor, *, masked: bool = False) -> torch.Tensor:
    """R1: mean over the batch of ||dD(real)/dx||^2 in D's input space (unweighted; the
    caller applies gamma/2).

    ``masked=True`` keeps only the gradient on hole pixels (CM-GAN's masked R1): the known
    region of a real and a fake composite is identical, so only the hole needs smoothing.
    """
    grad = _input_gradient(d, real_image, mask)
    if masked:
        grad = grad * (mask > 0.5).to(grad.dtype)
    return grad.square().sum(dim=(1, 2, 3)).mean()


def gradient_penalty(
    d: Discriminator,
    real_image: torch.Tensor,
    fake_image: torch.Tensor,
    mask: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP: mean of (||dD(x)/dx|| - 1)^2 at points x between real and fake images,
    the gradient taken in D's input space as for R1.

    The interpolation weight per image is drawn from ``generator`` (on the images' device);
    without one, the weights are evenly spaced over (0, 1) across the batch (deterministic,
    never the global RNG).
    """
    b = real_image.shape[0]
    if generator is not None:
        alpha = torch.rand(b, 1, 1, 1, generator=generator, device=real_image.device)
    else:
        alpha = ((torch.arange(b, device=real_image.device) + 0.5) / b).view(b, 1, 1, 1)
    alpha = alpha.to(real_image.dtype)
    between = alpha * real_image.detach() + (1.0 - alpha) * fake_image.detach()
    grad = _input_gradient(d, between, mask)
    norm: torch.Tensor = grad.flatten(1).norm(dim=1)  # Tensor.norm is unannotated in torch
    return (norm - 1.0).square().mean()


# --------------------------------------------------------------- per-family loss


_DEFAULT_REC: dict[str, RecKind] = {"inpnet": "mse", "mae": "mse", "cmgan": "l1"}


class PixelLoss:
    """Hole + known-pixel reconstruction loss (:func:`reconstruction_loss`)."""

    def __init__(self, *, kind: RecKind, hole_weight: float, valid_weight: float) -> None:
        self.kind = kind
        self.hole_weight = hole_weight
        self.valid_weight = valid_weight

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, prediction: torch.Tensor) -> LossOut:
        return reconstruction_loss(
            image, mask, prediction, kind=self.kind, hole_weight=self.hole_weight, valid_weight=self.valid_weight
        )


class MAELoss:
    """MAE's masked-patch loss (:func:`masked_patch_loss`), weighted by ``hole_weight``.

    ``pixel_mean``/``pixel_std``: the model's input normalisation, the space of the norm-pix target.
    """

    def __init__(
        self,
        *,
        patch_size: int,
        norm_pix: bool,
        kind: RecKind,
        weight: float,
        pixel_mean: Sequence[float] = (0.0, 0.0, 0.0),
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        self.patch_size, self.norm_pix, self.kind, self.weight = patch_size, norm_pix, kind, weight
        self.pixel_mean, self.pixel_std = tuple(pixel_mean), tuple(pixel_std)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, prediction: torch.Tensor) -> LossOut:
        p, mean, std = self.patch_size, self.pixel_mean, self.pixel_std
        return masked_patch_loss(
            image,
            mask,
            prediction,
            patch_size=p,
            norm_pix=self.norm_pix,
            pixel_mean=mean,
            pixel_std=std,
            kind=self.kind,
            weight=self.weight,
        )


def build_loss(model_cfg: InpNetModelConfig | MAEModelConfig | CMGANModelConfig, loss_cfg: LossConfig) -> LossFn:
    """The family's reconstruction loss: ``fn(image, mask, prediction) -> (total, parts)``.

    InP-Net and CM-GAN: pixel loss on hole and known pixels (MSE for InP-Net, L1 for CM-GAN
    unless ``loss.rec_loss`` says otherwise). MAE: the masked-patch loss, with normalised-pixel
    targets when ``model.norm_pix_loss``; ``valid_weight`` does not apply to it. Any family:
    plus the perceptual term (:class:`WithPerceptual`) when :func:`perceptual_status` is on;
    a weights file whose checksum differs raises :class:`~inpnet.errors.CheckpointError`.
    Adversarial terms are added by the trainer's adversarial step, not here.
    """
    base = _reconstruction(model_cfg, loss_cfg)
    on, _ = perceptual_status(loss_cfg)
    if not on:
        return base
    from inpnet.models.vgg import load_vgg19_features

    assert loss_cfg.perceptual_weights_path and loss_cfg.perceptual_weights_sha256  # LossConfig's check
    features = load_vgg19_features(
        loss_cfg.perceptual_weights_path,
        loss_cfg.perceptual_weights_sha256,
        layers=tuple(PERCEPTUAL_LAYER_WEIGHTS),
        key="loss.perceptual_weights_path",
    )
    return WithPerceptual(base, features, loss_cfg.perceptual_weight)


def _reconstruction(model_cfg: InpNetModelConfig | MAEModelConfig | CMGANModelConfig, loss_cfg: LossConfig) -> LossFn:
    from inpnet.config import MAEModelConfig

    kind: RecKind = loss_cfg.rec_loss or _DEFAULT_REC[model_cfg.family]
    if isinstance(model_cfg, MAEModelConfig):
        if loss_cfg.valid_weight > 0:
            log.info("MAE loss covers masked patches only; loss.valid_weight=%s is not used", loss_cfg.valid_weight)
        from inpnet.models.mae import IMAGENET_MEAN, IMAGENET_STD

        return MAELoss(
            patch_size=model_cfg.patch_size,
            norm_pix=model_cfg.norm_pix_loss,
            kind=kind,
            weight=loss_cfg.hole_weight,
            pixel_mean=IMAGENET_MEAN,
            pixel_std=IMAGENET_STD,
        )
    return PixelLoss(kind=kind, hole_weight=loss_cfg.hole_weight, valid_weight=loss_cfg.valid_weight)
