"""Builders: a model and a discriminator from typed configs (the loss: :func:`inpnet.losses.build_loss`).

CM-GAN's generator and the StyleGAN2 discriminator are imported only when asked for, so
InP-Net and MAE runs do not load their modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from torch import nn

from inpnet.config import CMGANModelConfig, InpNetModelConfig, MAEModelConfig

if TYPE_CHECKING:
    from inpnet.models.discriminators import Discriminator

__all__ = ["build_discriminator", "build_model", "inference_settings", "view_patch_size"]


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


def view_patch_size(cfg: InpNetModelConfig | MAEModelConfig | CMGANModelConfig) -> int | None:
    """The patch size of a model that sees its input patch by patch, else None.

    MAE drops every patch holding a hole pixel, and InP-Net with ``patch_view`` hides it
    whole: the known pixels of such patches are lost to the model. InP-Net and CM-GAN
    otherwise read every known pixel, with a mask channel beside the image.
    """
    if isinstance(cfg, MAEModelConfig) or (isinstance(cfg, InpNetModelConfig) and cfg.patch_view):
        return cfg.patch_size
    return None


def inference_settings(cfg: InpNetModelConfig | MAEModelConfig | CMGANModelConfig) -> dict[str, object]:
    """What the model does at inference beyond its weights, for reports (plain values).

    ``input_view``: ``pixels`` (every known pixel reaches the model) or ``patches`` (only
    patches without a hole pixel, ``view_patch_size`` px; the evaluation report counts the
    known pixels that are lost); CM-GAN's ``latent`` w.
    """
    patch = view_patch_size(cfg)
    out: dict[str, object] = {"input_view": "patches" if patch else "pixels", "view_patch_size": patch}
    if isinstance(cfg, CMGANModelConfig):
        out["latent"] = (
            "w_avg (truncation psi 0)" if cfg.eval_latent == "w_avg" else f"mapping of seeded z (seed {cfg.eval_seed})"
        )
    return out


def build_discriminator(
    kind: Literal["patchgan", "stylegan2"], *, img_size: int, base_channels: int = 64
) -> Discriminator:
    """A discriminator (``train.loss.disc``) with ``forward(image, mask) -> scores`` of shape (B, ...)."""
    if kind == "patchgan":
        from inpnet.models.discriminators import PatchGANDiscriminator

        return PatchGANDiscriminator(img_size=img_size, base_channels=base_channels)
    if kind == "stylegan2":
        from inpnet.models.stylegan_disc import StyleGAN2Discriminator

        return StyleGAN2Discriminator(img_size=img_size, base_channels=base_channels)
    raise ValueError(f"unknown discriminator {kind!r}; expected 'patchgan' or 'stylegan2' (train.loss.disc.kind)")
