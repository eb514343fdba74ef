"""CM-GAN generator: cascaded global-spatial modulation (Zheng et al. 2022).

"CM-GAN: Image Inpainting with Cascaded Modulation GAN and Object-Aware Training". The
authors released no code; this follows the paper's description:

1. **Encoder** on the masked image plus the mask (4 channels): strided stages down to
   ``min_res`` (4x4), with Fourier-convolution residual blocks (LaMa's FFC) at
   ``img_size / ffc_stride`` for an image-wide receptive field, and mask-aware attention at
   resolutions <= ``attn_max_res`` (switchable) to propagate features from known positions
   into the hole. It yields one feature map per scale, F_e^(r).
2. **Global code** g = [s; w]: s is a linear map of the flattened lowest-resolution feature,
   L2-normalised; w is a mapping network's output on noise z.
3. **Decoder**, one :class:`CascadedBlock` per scale from ``min_res`` to ``img_size``, each
   holding a global modulation block (two style-modulated, demodulated convolutions driven
   by g) whose output drives a spatial modulation block (a spatially varying scale A and
   shift B predicted from the global block's features, applied around a convolution that
   is modulated and demodulated by g). Encoder skips are added to both branches; noise is
   injected after every convolution. The two branches are cascaded: each scale's global and
   spatial outputs feed the next scale's global and spatial blocks.
4. **Output**: StyleGAN2-style skip toRGB on the spatial branch, summed over scales and
   scaled by 1 / (number of scales) and squashed to [0, 1] with ``(tanh(x) + 1) / 2``.

Noise (z and per-layer noise) comes from an explicit ``torch.Generator`` passed as
``generator=`` to :meth:`CMGAN.forward` (the trainer's adversarial step owns it). In training
mode each such call also updates ``w_avg``, the running mean of w = mapping(z) (StyleGAN2's,
beta 0.995), a buffer saved with the weights. Without a generator (evaluation, export,
inference) the per-layer noise is zero and w is, by ``eval_latent``, either ``w_avg``
(truncation psi = 0, the default) or mapping(z) of one z drawn from ``eval_seed`` and shared
by every image, so outputs are deterministic and do not depend on the batch. Never z = 0:
pixel-normalising zero gives zero, an input the mapping network never saw in training.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from inpnet.config import CMGANModelConfig
from inpnet.errors import ShapeError
from inpnet.models.composite import check_image_mask, masked_input
from inpnet.models.ffc import FFCResBlock
from inpnet.models.mask_attention import MaskAwareAttention
from inpnet.models.modulation import (
    EqualConv2d,
    EqualLinear,
    MappingNetwork,
    ModulatedConv2d,
    NoiseInjection,
    ResDownBlock,
    SpatialModulatedConv2d,
    lrelu,
    upsample2x,
)


class GlobalBlock(nn.Module):
    """Global modulation block: [upsample] -> modconv(g) + skip -> modconv(g)."""

    def __init__(self, in_ch: int, out_ch: int, code_dim: int, *, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv1 = ModulatedConv2d(in_ch, out_ch, 3, code_dim)
        self.conv2 = ModulatedConv2d(out_ch, out_ch, 3, code_dim)
        self.noise1, self.noise2 = NoiseInjection(), NoiseInjection()

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor, code: torch.Tensor, gen: torch.Generator | None
    ) -> torch.Tensor:
        if self.upsample:
            x = upsample2x(x)
        x = lrelu(self.noise1(self.conv1(x, code), gen)) + skip
        return lrelu(self.noise2(self.conv2(x, code), gen))


class SpatialBlock(nn.Module):
    """Spatial modulation block: [upsample] -> modconv(g) + skip -> spatial modulation by (A, B).

    (A, B) come from the global block's output through a 3x3 convolution; A is centred on 1 so
    that at initialisation the block behaves like a plain globally modulated convolution.
    """

    def __init__(self, in_ch: int, out_ch: int, code_dim: int, *, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv1 = ModulatedConv2d(in_ch, out_ch, 3, code_dim)
        self.to_affine = EqualConv2d(out_ch, 2 * out_ch, 3)
        with torch.no_grad():
            # start near the identity (A ~ 1, B ~ 0): demodulation assumes a unit-variance
            # input, which a large random A would break and compound across the cascade.
            self.to_affine.weight.mul_(0.1)
        self.conv2 = SpatialModulatedConv2d(out_ch, out_ch, 3, code_dim)
        self.noise1, self.noise2 = NoiseInjection(), NoiseInjection()

    def forward(
        self,
        x: torch.Tensor,
        skip: torch.Tensor,
        global_feat: torch.Tensor,
        code: torch.Tensor,
        gen: torch.Generator | None,
    ) -> torch.Tensor:
        if self.upsample:
            x = upsample2x(x)
        y = lrelu(self.noise1(self.conv1(x, code), gen)) + skip
        scale, shift = self.to_affine(global_feat).chunk(2, dim=1)  # each (B, C, H, W)
        y = self.conv2.forward_spatial(y, code, 1.0 + scale, shift)
        return lrelu(self.noise2(y, gen))


class CascadedBlock(nn.Module):
    """One decoder scale: global block -> spatial block, plus the spatial branch's toRGB."""

    def __init__(self, in_ch: int, out_ch: int, code_dim: int, *, upsample: bool) -> None:
        super().__init__()
        self.global_block = GlobalBlock(in_ch, out_ch, code_dim, upsample=upsample)
        self.spatial_block = SpatialBlock(in_ch, out_ch, code_dim, upsample=upsample)
        self.to_rgb = ModulatedConv2d(out_ch, 3, 1, code_dim, demodulate=False)

    def forward(
        self, f_g: torch.Tensor, f_s: torch.Tensor, skip: torch.Tensor, code: torch.Tensor, gen: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f_g = self.global_block(f_g, skip, code, gen)
        f_s = self.spatial_block(f_s, skip, f_g, code, gen)
        return f_g, f_s, self.to_rgb(f_s, code)


class CMGAN(nn.Module):
    """The CM-GAN generator. ``forward(image, mask) -> prediction`` in [0, 1].

    Args:
        img_size: input resolution, a power of two >= 2 * min_res (the global code's linear
            map flattens the lowest feature, so inputs must have exactly this size).
        base_channels: channels at full resolution; doubled per halving, capped at ``max_channels``.
        max_channels: channel cap.
        num_ffc_blocks: FFC residual blocks at ``img_size / ffc_stride``.
        style_dim: width of s and of w (g has twice this).
        mapping_layers: depth of the mapping network.
        mask_attention: add mask-aware attention at resolutions <= ``attn_max_res``.
        attn_max_res: highest resolution that gets an attention block.
        attn_heads: heads per attention block.
        ffc_stride: FFC blocks run at ``img_size // ffc_stride``.
        min_res: lowest encoder resolution.
        eval_latent: w without a noise generator: ``w_avg`` or ``seeded_z`` (see the module doc).
        eval_seed: the seed of that z for ``seeded_z``.
    """

    W_AVG_BETA = 0.995  # StyleGAN2's w_avg_beta
    w_avg: torch.Tensor  # (style_dim,) buffer, registered in __init__

    def __init__(
        self,
        *,
        img_size: int = 128,
        base_channels: int = 32,
        max_channels: int = 256,
        num_ffc_blocks: int = 2,
        style_dim: int = 256,
        mapping_layers: int = 2,
        mask_attention: bool = True,
        attn_max_res: int = 16,
        attn_heads: int = 4,
        ffc_stride: int = 8,
        min_res: int = 4,
        eval_latent: Literal["w_avg", "seeded_z"] = "w_avg",
        eval_seed: int = 0,
    ) -> None:
        super().__init__()
        if img_size & (img_size - 1) or img_size < 2 * min_res:
            raise ValueError(f"img_size must be a power of two >= {2 * min_res}, got {img_size}")
        self.img_size, self.min_res, self.style_dim = img_size, min_res, style_dim
        self.ffc_res = max(img_size // ffc_stride, min_res)
        self.attn_max_res = attn_max_res if mask_attention else 0
        n_scales = int(math.log2(img_size // min_res)) + 1
        self.resolutions = [img_size >> i for i in range(n_scales)]  # e.g. 128, 64, ..., 4
        ch = {r: min(max_channels, base_channels * (img_size // r)) for r in self.resolutions}
        self.channels = ch

        # encoder: input conv at full resolution, then one stage per halving
        self.from_input = EqualConv2d(4, ch[img_size], 1)
        self.enc_stages = nn.ModuleList([ResDownBlock(ch[r], ch[r // 2]) for r in self.resolutions[:-1]])
        self.ffc = nn.Sequential(*[FFCResBlock(ch[self.ffc_res]) for _ in range(num_ffc_blocks)])
        self.attn = nn.ModuleDict(
            {str(r): MaskAwareAttention(ch[r], attn_heads) for r in self.resolutions if r <= self.attn_max_res}
        )

        # global code g = [s; w]
        self.to_s = EqualLinear(ch[min_res] * min_res * min_res, style_dim)
        self.mapping = MappingNetwork(style_dim, mapping_layers)
        self.register_buffer("w_avg", torch.zeros(style_dim))  # persistent: checkpoints carry it
        if eval_latent not in ("w_avg", "seeded_z"):
            raise ValueError(f"eval_latent must be 'w_avg' or 'seeded_z', got {eval_latent!r}")
        self.eval_latent, self.eval_seed = eval_latent, eval_seed
        code_dim = 2 * style_dim

        # decoder, lowest resolution first
        dec_res = self.resolutions[::-1]
        self.dec_blocks = nn.ModuleList(
            [CascadedBlock(ch[dec_res[max(i - 1, 0)]], ch[r], code_dim, upsample=i > 0) for i, r in enumerate(dec_res)]
        )

    @classmethod
    def from_config(cls, cfg: CMGANModelConfig) -> CMGAN:
        """Build from the typed ``model:`` section of a cmgan variant."""
        return cls(
            img_size=cfg.img_size,
            base_channels=cfg.base_channels,
            max_channels=cfg.max_channels,
            num_ffc_blocks=cfg.num_ffc_blocks,
            style_dim=cfg.style_dim,
            mapping_layers=cfg.mapping_layers,
            mask_attention=cfg.mask_attention,
            attn_max_res=cfg.attn_max_res,
            attn_heads=cfg.attn_heads,
            ffc_stride=cfg.ffc_stride,
            eval_latent=cfg.eval_latent,
            eval_seed=cfg.eval_seed,
        )

    def encode(self, image: torch.Tensor, mask: torch.Tensor) -> dict[int, torch.Tensor]:
        """Features per resolution {r: (B, C_r, r, r)} of the masked image; hole pixels unseen."""
        x = masked_input(image, mask, fill=0.5) * 2.0 - 1.0  # known in [-1, 1], hole 0
        x = torch.cat([x, mask.to(x.dtype) - 0.5], dim=1)  # (B, 4, H, W)
        x = lrelu(self.from_input(x))
        feats: dict[int, torch.Tensor] = {}
        for i, r in enumerate(self.resolutions):
            if r == self.ffc_res:
                x = self.ffc(x)
            if str(r) in self.attn:
                x = self.attn[str(r)](x, mask)
            feats[r] = x
            if i < len(self.enc_stages):
                x = self.enc_stages[i](x)
        return feats

    def latent(self, batch: int, gen: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
        """w (B, style_dim): mapping(z) of noise from ``gen``, else the evaluation latent."""
        if gen is not None:
            z = torch.randn((batch, self.style_dim), generator=gen, device=gen.device).to(like)
            w: torch.Tensor = self.mapping(z)
            if self.training:
                with torch.no_grad():
                    self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.W_AVG_BETA))
            return w
        if self.eval_latent == "w_avg":
            return self.w_avg.to(like)[None].expand(batch, -1)
        seeded = torch.Generator(device="cpu").manual_seed(self.eval_seed)
        z = torch.randn((1, self.style_dim), generator=seeded).to(like)  # one z for every image
        mapped: torch.Tensor = self.mapping(z)
        return mapped.expand(batch, -1)

    def global_code(self, lowest: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """g = [s; w] (B, 2 * style_dim) from the lowest feature (B, C, r, r) and noise."""
        s = F.normalize(self.to_s(lowest.flatten(1)), dim=1)  # (B, C*r*r) -> (B, style_dim)
        return torch.cat([s, self.latent(lowest.shape[0], gen, s)], dim=1)

    def forward(
        self, image: torch.Tensor, mask: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Inpaint: image (B, 3, H, W) in [0, 1], mask (B, 1, H, W) 1 = hole -> (B, 3, H, W) in [0, 1]."""
        check_image_mask(image, mask)
        h, w = image.shape[-2:]
        if h != w or h != self.img_size:
            raise ShapeError(
                f"CMGAN was built for {self.img_size}x{self.img_size} inputs, got {h}x{w}; resize or rebuild"
            )
        feats = self.encode(image, mask)
        code = self.global_code(feats[self.min_res], generator)
        f_g = f_s = feats[self.min_res]
        rgb = None
        for block, r in zip(self.dec_blocks, self.resolutions[::-1], strict=True):
            f_g, f_s, rgb_r = block(f_g, f_s, feats[r], code, generator)
            rgb = rgb_r if rgb is None else upsample2x(rgb) + rgb_r
        assert rgb is not None  # there is a decoder block per scale, at least two
        # the skip sum grows with the number of scales; the fixed gain keeps the initial
        # output inside tanh's linear range instead of saturating at 0 and 1.
        return (torch.tanh(rgb / len(self.dec_blocks)) + 1.0) / 2.0
