"""Discriminators' common form, and the PatchGAN that scores every patch of an (image, mask) pair.

:class:`Discriminator` splits ``forward(image, mask)`` into ``score(to_input(image), mask)``:
the networks see the image in [-1, 1], and penalties on D's input gradient (R1, WGAN-GP,
:mod:`inpnet.losses`) differentiate with respect to that input, as StyleGAN2 does.


As pix2pix's 70x70 PatchGAN, with the mask stacked as a fourth input channel (DeepFill v2's
SN-PatchGAN) so the discriminator knows where the generated pixels are. Every convolution
is spectrally normalised, which keeps the critic Lipschitz-bounded for hinge and
non-saturating losses and works with R1 and gradient penalties (unlike batch
normalisation, it treats each image independently). The number of stride-2 layers shrinks
for small images so the score map never vanishes (3 at >= 64 px).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from inpnet.models.composite import check_image_mask

__all__ = ["Discriminator", "PatchGANDiscriminator"]


class Discriminator(nn.Module):
    """``forward(image (B,3,H,W) in [0,1], mask (B,1,H,W)) -> scores (B, ...)`` = ``score(to_input(image), mask)``."""

    def to_input(self, image: torch.Tensor) -> torch.Tensor:
        """The image as the network sees it: [0, 1] mapped to [-1, 1]."""
        return image * 2.0 - 1.0

    def score(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scores of ``x`` (already in the network's input space) with its mask."""
        raise NotImplementedError

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        check_image_mask(image, mask)
        return self.score(self.to_input(image), mask)


def _conv(cin: int, cout: int, stride: int) -> nn.Module:
    return spectral_norm(nn.Conv2d(cin, cout, kernel_size=4, stride=stride, padding=1))


class PatchGANDiscriminator(Discriminator):
    """``forward(image (B,3,H,W), mask (B,1,H,W)) -> scores (B,1,h,w)`` (raw logits / critic values).

    Args:
        img_size: training image size; sets the number of downsampling layers.
        base_channels: width of the first layer; doubles per layer up to 8x.
    """

    def __init__(self, *, img_size: int = 128, base_channels: int = 64) -> None:
        super().__init__()
        n_down = max(1, min(3, int(math.log2(img_size)) - 3))
        layers: list[nn.Module] = [_conv(4, base_channels, 2), nn.LeakyReLU(0.2)]
        ch = base_channels
        for _ in range(n_down - 1):
            layers += [_conv(ch, min(ch * 2, base_channels * 8), 2), nn.LeakyReLU(0.2)]
            ch = min(ch * 2, base_channels * 8)
        out = min(ch * 2, base_channels * 8)
        layers += [_conv(ch, out, 1), nn.LeakyReLU(0.2), _conv(out, 1, 1)]
        self.net = nn.Sequential(*layers)

    def score(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, mask.to(x.dtype)], dim=1)  # (B, 4, H, W), image in [-1, 1]
        logits: torch.Tensor = self.net(x)  # (B, 1, h, w)
        return logits
