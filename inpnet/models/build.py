"""Builders: a model, a discriminator and a reconstruction loss from typed configs.

CM-GAN's generator and the StyleGAN2 discriminator are imported only when asked for, so
InP-Net and MAE runs do not load their modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from inpnet.config import CMGANModelConfig, InpNetModelConfig, LossConfig, MAEModelConfig
from inpnet.losses import RecKind, masked_patch_loss, reconstruction_loss

__all__ = ["LossFn", "MAELoss", "PixelLoss", "build_discriminator", "build_loss", "build_model"]

log = logging.getLogger(__name__)

LossOut = tuple[torch.Tensor, dict[str, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], LossOut]

# The paper's choice per family when LossConfig.rec_loss is None.
_DEFAULT_REC: dict[str, RecKind] = {"inpnet": "mse", "mae": "mse", "cmgan": "l1"}


def build_model(cfg: InpNetModelConfig | MAEModelConfig | CMGANModelConfig, *, pretrained: bool = True) -> nn.Module:
    """The family's ``nn.Module`` (``forward(image, mask) -> prediction``), built from its config.

    ``pretrained=False`` skips loading ``cfg.pretrained`` (MAE): use it when the weights
    come from a trained checkpoint anyway, so the original pre-training file need not exist.
    """
    if cfg.family == "inpnet":
        from inpnet.models.inpnet import InpNet

        return InpNet.from_config(cfg)
    if cfg.family == "mae":
        from inpnet.models.mae import MAE

        return MAE.from_config(cfg, pretrained=pretrained)
    if cfg.family == "cmgan":
        from inpnet.models.cmgan import CMGAN

        return CMGAN.from_config(cfg)
    raise ValueError(f"unknown model family {cfg.family!r}; expected inpnet, mae or cmgan")


def build_discriminator(
    kind: Literal["patchgan", "stylegan2"], *, img_size: int, base_channels: int = 64
) -> nn.Module:
    """A discriminator with ``forward(image, mask) -> scores`` of shape (B, ...)."""
    if kind == "patchgan":
        from inpnet.models.discriminators import PatchGANDiscriminator

        return PatchGANDiscriminator(img_size=img_size, base_channels=base_channels)
    if kind == "stylegan2":
        from inpnet.models.stylegan_disc import StyleGAN2Discriminator

        return StyleGAN2Discriminator(img_size=img_size, base_channels=base_channels)
    raise ValueError(f"unknown discriminator {kind!r}; expected 'patchgan' or 'stylegan2' (train.loss.disc)")


class PixelLoss:
    """Hole + known-pixel reconstruction loss (:func:`inpnet.losses.reconstruction_loss`)."""

    def __init__(self, *, kind: RecKind, hole_weight: float, valid_weight: float) -> None:
        self.kind = kind
        self.hole_weight = hole_weight
        self.valid_weight = valid_weight

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, prediction: torch.Tensor) -> LossOut:
        return reconstruction_loss(
            image, mask, prediction, kind=self.kind, hole_weight=self.hole_weight, valid_weight=self.valid_weight
        )


class MAELoss:
    """MAE's masked-patch loss (:func:`inpnet.losses.masked_patch_loss`), weighted by ``hole_weight``."""

    def __init__(self, *, patch_size: int, norm_pix: bool, kind: RecKind, weight: float) -> None:
        self.patch_size = patch_size
        self.norm_pix = norm_pix
        self.kind = kind
        self.weight = weight

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, prediction: torch.Tensor) -> LossOut:
        return masked_patch_loss(
            image, mask, prediction, patch_size=self.patch_size, norm_pix=self.norm_pix, kind=self.kind, weight=self.weight
        )


def build_loss(model_cfg: InpNetModelConfig | MAEModelConfig | CMGANModelConfig, loss_cfg: LossConfig) -> LossFn:
    """The family's reconstruction loss: ``fn(image, mask, prediction) -> (total, parts)``.

    InP-Net and CM-GAN: pixel loss on hole and known pixels (MSE for InP-Net, L1 for CM-GAN
    unless ``loss.rec_loss`` says otherwise). MAE: the masked-patch loss, with normalised-pixel
    targets when ``model.norm_pix_loss``; ``valid_weight`` does not apply to it. Adversarial
    terms are added by the trainer's adversarial step, not here.
    """
    kind: RecKind = loss_cfg.rec_loss or _DEFAULT_REC[model_cfg.family]
    if loss_cfg.perceptual_weight > 0:
        log.warning("loss.perceptual_weight=%s: build_loss returns pixel terms only; the perceptual term is not included",
                    loss_cfg.perceptual_weight)
    if isinstance(model_cfg, MAEModelConfig):
        if loss_cfg.valid_weight > 0:
            log.info("MAE loss covers masked patches only; loss.valid_weight=%s is not used", loss_cfg.valid_weight)
        return MAELoss(patch_size=model_cfg.patch_size, norm_pix=model_cfg.norm_pix_loss, kind=kind, weight=loss_cfg.hole_weight)
    return PixelLoss(kind=kind, hole_weight=loss_cfg.hole_weight, valid_weight=loss_cfg.valid_weight)
