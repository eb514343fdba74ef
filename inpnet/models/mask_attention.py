"""Mask-aware attention: propagate features from known positions into the hole.

CM-GAN asks for feature propagation from known to unknown regions at the lowest
resolutions. Here every position attends over all positions, but the attention logits get
``log(known_fraction + eps)`` added per key, where ``known_fraction`` is the share of known
pixels under that key's footprint (the mask average-pooled to the feature resolution). Keys
that lie entirely inside the hole are thus suppressed by about ``log(eps)`` (a factor of
1e-4 for the default eps), partially known keys are down-weighted in proportion, and a
fully known image reduces to plain attention. A soft bias rather than a hard -inf keeps the
softmax defined when a whole feature map lies in the hole.

The block is residual with a per-position pre-norm (LayerNorm) and a learned output projection, so it
can be switched on or off per variant (``CMGANModelConfig.mask_attention``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def known_fraction(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Share of known pixels (mask == 0) under each cell of a ``size`` grid: (B, 1, h, w)."""
    return F.adaptive_avg_pool2d(1.0 - mask, size)


class MaskAwareAttention(nn.Module):
    """Multi-head self-attention over a feature map, biased toward known keys.

    Args:
        channels: feature channels (divisible by ``num_heads``).
        num_heads: attention heads.
        eps: floor of the known fraction inside the log bias.
    """

    def __init__(self, channels: int, num_heads: int = 4, eps: float = 1e-4) -> None:
        super().__init__()
        heads = max(1, min(num_heads, channels))
        while channels % heads:
            heads -= 1
        self.num_heads = heads
        # per-position LayerNorm: a GroupNorm's statistics would pool over hole positions
        # and leak their content into every known position.
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, channels * 3)
        self.proj = nn.Linear(channels, channels)
        self.eps = eps

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, C, h, w) features; mask: (B, 1, H, W) full-resolution, 1 = hole."""
        b, c, h, w = x.shape
        known = known_fraction(mask.to(x.dtype), (h, w))  # (B, 1, h, w)
        bias = torch.log(known.clamp_min(self.eps)).flatten(1)  # (B, h*w), per key
        bias = bias[:, None, None, :]  # (B, 1, 1, h*w) broadcast over heads and queries

        tokens = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        qkv = self.qkv(self.norm(tokens)).reshape(b, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, h*w, C/heads)
        out: torch.Tensor = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype)
        )  # (B, heads, h*w, C/heads)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))  # (B, h*w, C)
        return x + out.transpose(1, 2).reshape(b, c, h, w)
