"""StyleGAN2 residual discriminator that scores an image together with its mask.

Layout as in StyleGAN2's "resnet" discriminator (Karras et al. 2020) and its use in
CoModGAN / CM-GAN, where the mask is an extra input channel so that the discriminator can
judge the hole in context: a 1x1 input layer, one residual block per halving down to 4x4
(:class:`~inpnet.models.modulation.ResDownBlock`), then a
minibatch-standard-deviation feature, a 3x3 convolution and two fully connected layers.

Weights use the equalized learning rate of :mod:`inpnet.models.modulation`; downsampling is
2x2 average pooling (a box filter standing in for StyleGAN2's [1, 3, 3, 1] FIR filter).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from inpnet.models.discriminators import Discriminator
from inpnet.models.modulation import EqualConv2d, EqualLinear, ResDownBlock, lrelu


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append one channel: the mean std of features across groups of samples (B, C+1, H, W).

    The group is the largest divisor of the batch that is <= ``group_size`` so that any batch
    size works (a batch of 1 gets a zero channel).
    """
    b, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, b) + 1) if b % d == 0)
    y = x.float().reshape(g, b // g, c, h, w)  # (G, B/G, C, H, W): statistics across G
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (B/G, C, H, W)
    y = y.mean(dim=(1, 2, 3))  # (B/G,)
    y = y.to(x.dtype).repeat(g)[:, None, None, None].expand(b, 1, h, w)  # sample i gets group i % (B/G)
    return torch.cat([x, y], dim=1)


class StyleGAN2Discriminator(Discriminator):
    """Scores ``(image, mask)`` pairs: (B, 3, S, S) in [0, 1] and (B, 1, S, S) -> (B, 1) logits.

    Args:
        img_size: input resolution, a power of two >= 8.
        base_channels: channels at full resolution; doubled per halving, capped at ``max_channels``.
        max_channels: channel cap.
        mbstd_group: group size of the minibatch-stddev feature.
    """

    def __init__(
        self, *, img_size: int, base_channels: int = 64, max_channels: int = 512, mbstd_group: int = 4
    ) -> None:
        super().__init__()
        if img_size & (img_size - 1) or img_size < 8:
            raise ValueError(f"img_size must be a power of two >= 8, got {img_size}")
        self.img_size, self.mbstd_group = img_size, mbstd_group
        res = [img_size >> i for i in range(int(math.log2(img_size)) - 1)]  # img_size ... 4
        ch = {r: min(max_channels, base_channels * (img_size // r)) for r in res}
        self.from_input = EqualConv2d(4, ch[img_size], 1)
        self.blocks = nn.Sequential(*[ResDownBlock(ch[r], ch[r // 2]) for r in res[:-1]])
        self.conv = EqualConv2d(ch[4] + 1, ch[4], 3)
        self.fc = EqualLinear(ch[4] * 16, ch[4], activation=True)
        self.out = EqualLinear(ch[4], 1)

    def score(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, mask.to(x.dtype) - 0.5], dim=1)  # (B, 4, S, S), image in [-1, 1]
        x = self.blocks(lrelu(self.from_input(x)))  # (B, C, 4, 4)
        x = lrelu(self.conv(minibatch_stddev(x, self.mbstd_group)))
        score: torch.Tensor = self.out(self.fc(x.flatten(1)))  # (B, C*16) -> (B, 1)
        return score
