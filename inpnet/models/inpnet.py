"""InP-Net: a ViT encoder with multi-depth skip connections into a light CNN decoder.

Input. The masked image (holes set to 0) and the mask are stacked into 4 channels and cut
into patch tokens. A mask *channel* rather than MAE-style mask tokens: training masks are
arbitrary pixel shapes, so most patches are partly known; a channel tells the encoder
exactly which pixels of a patch are missing, whereas a token could only mark whole
patches (wasting the known pixels of border patches). It also keeps the sequence length
fixed, so batches need no gather, padding or attention masks and the encoder runs at the
speed of a plain ViT. Ratio 0 (no hole) is just an all-zero mask channel.

Position embeddings are fixed 2-D sin-cos (no parameters), regenerated exactly for any
patch grid, so the model runs at sizes other than ``img_size`` without interpolation.
Other sizes that are not multiples of the patch size are edge-padded and cropped back.

Skip connections. The token maps after several encoder depths (default 1/4, 1/2, 3/4 of
the blocks and the last) are reshaped to (B, D, H/p, W/p). The last feeds the decoder's
first stage; the others, deepest first, join successive decoder stages (the shallower the
feature, the finer the stage), each through a 1x1 reduction and a transposed convolution
that brings it to that stage's resolution. ``skip_connections=False`` (ablation) keeps only
the last depth.

Decoder. One stage per ``decoder_channels`` entry: a transposed convolution (2x, the first
stage makes up the rest of the patch size), the skip added, then a refinement block
(depthwise 3x3, GroupNorm, pointwise, GELU, residual). The last, full-resolution stage only
upsamples: there, normalisation and refinement are memory-bound and cost about a fifth of
a training step on a CPU for little gain. A 1x1 head fuses its features with the 4-channel
input (so known pixels next to the hole are at hand) and ends in a sigmoid: output always
in (0, 1) and, unlike a clamp, never a zero gradient for out-of-range values.

Pre-fill (``prefill``, an option). With ``pushpull`` or ``telea`` the hole is first filled
by that cheap classical method (:mod:`inpnet.models.prefill`, from known pixels only) and
the network sees the filled image plus the mask; its head predicts a correction in logit
space, ``sigmoid(logit(fill) + head)``, and starts at zero, so the untrained model *is* the
classical fill and training only has to improve on it. On small budgets that is what puts
a ViT ahead of Telea instead of 5-10 dB behind it.

Patch view (``patch_view``, an ablation). MAE drops every patch that holds a hole pixel, so
the known pixels of border patches are lost to it. With ``patch_view`` InP-Net gets the same
view: its input mask is grown to whole patches (:func:`~inpnet.models.patches.patch_view`)
before anything reads the image, so those known pixels are hidden from the encoder, the
pre-fill and the head alike. The loss and the composite still use the true mask, as for MAE,
so the comparison with MAE isolates the architecture from the input.

Precision. Under autocast only the encoder runs in bf16/fp16; the decoder (skip
projections, transposed convolutions, GroupNorm, head, sigmoid) runs in fp32 and the
output is fp32 (see ``forward`` for why).

Cost (``bench/train.py`` measures it): at 128 px with the ``inpnet_s`` encoder the decoder
adds about 8% FLOPs and, measured as single-thread CPU time, 1.2-1.25x a plain timm ViT
training step with the same encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from inpnet.config import InpNetModelConfig
from inpnet.models.blocks import LayerNorm, init_vit_weights, make_patch_embed, make_vit_block, sincos_pos_embed_2d
from inpnet.models.composite import check_image_mask, masked_input
from inpnet.models.patches import grid_of, pad_to_multiple, patch_view
from inpnet.models.prefill import Prefill, prefill

__all__ = ["InpNet", "default_skip_depths"]


def default_skip_depths(depth: int) -> tuple[int, ...]:
    """Blocks (counted from 1) after 1/4, 1/2, 3/4 of the encoder and the last, deduplicated."""
    return tuple(sorted({max(1, math.ceil(depth * f)) for f in (0.25, 0.5, 0.75, 1.0)}))


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class RefineBlock(nn.Module):
    """Residual refinement: depthwise 3x3 -> GroupNorm -> pointwise -> GELU (cheap at high resolution)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.pw = nn.Conv2d(channels, channels, kernel_size=1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        correction: torch.Tensor = self.act(self.pw(self.norm(self.dw(x))))
        return x + correction


class UpStage(nn.Module):
    """Transposed-convolution upsampling by ``scale``, the stage's skip added, then refinement."""

    def __init__(self, in_ch: int, out_ch: int, scale: int, *, refine: bool = True) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=scale, stride=scale)
        # full resolution: ReLU, whose backward is a cheap threshold (GELU's costs ~3x there)
        self.refine = RefineBlock(out_ch) if refine else nn.ReLU()

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = x + skip
        refined: torch.Tensor = self.refine(x)
        return refined


class SkipProjection(nn.Module):
    """Tokens (B, N, D) -> map (B, C, gh*scale, gw*scale).

    A 1x1 reduction to C channels, then a learned upsampling that gives every token a
    (C, scale, scale) block: a transposed convolution with kernel = stride = scale, written
    as a linear layer plus a rearrangement because that is a single GEMM (a third of the
    cost of the equivalent ``ConvTranspose2d`` on a CPU).
    """

    def __init__(self, dim: int, channels: int, scale: int) -> None:
        super().__init__()
        self.channels, self.scale = channels, scale
        self.norm = LayerNorm(dim)
        self.reduce = nn.Linear(dim, channels)
        self.up = nn.Linear(channels, channels * scale * scale)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b = tokens.shape[0]
        gh, gw = grid
        c, s = self.channels, self.scale
        x: torch.Tensor = self.up(self.reduce(self.norm(tokens)))  # (B, N, C*s*s)
        x = x.reshape(b, gh, gw, c, s, s).permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, s, gw, s)
        return x.reshape(b, c, gh * s, gw * s)


class InpNet(nn.Module):
    """ViT encoder + skip connections + CNN decoder; ``forward(image, mask) -> (B,3,H,W)`` in (0, 1)."""

    pos_embed: torch.Tensor  # buffer (registered in __init__)

    def __init__(
        self,
        *,
        img_size: int = 128,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        skip_connections: bool = True,
        skip_depths: tuple[int, ...] | None = None,
        decoder_channels: tuple[int, ...] = (96, 48, 24, 12),
        drop_path: float = 0.0,
        prefill: Prefill = "none",
        patch_view: bool = False,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.prefill = prefill
        self.patch_view = patch_view
        self.embed_dim = embed_dim
        n_stages = len(decoder_channels)
        first_scale = patch_size // 2 ** (n_stages - 1)
        if first_scale < 1 or first_scale * 2 ** (n_stages - 1) != patch_size:
            raise ValueError(f"patch_size {patch_size} must be a multiple of 2**(len(decoder_channels)-1)")
        taps = tuple(sorted(set(skip_depths or default_skip_depths(depth))))
        if any(not 1 <= d <= depth for d in taps):
            raise ValueError(f"skip_depths {taps} must lie in 1..{depth}")
        # The last block always feeds the decoder; the other taps are skips (deepest first).
        self.skip_depths = tuple(d for d in reversed(taps) if d != depth) if skip_connections else ()

        self.patch_embed = make_patch_embed(img_size=img_size, patch_size=patch_size, in_chans=4, embed_dim=embed_dim)
        grid = grid_of(img_size, img_size, patch_size)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(embed_dim, *grid)[None], persistent=False)
        self._pos_grid = grid
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            make_vit_block(embed_dim, num_heads, mlp_ratio=mlp_ratio, drop_path=dpr[i]) for i in range(depth)
        )
        self.norm = LayerNorm(embed_dim)

        scales = [first_scale * 2**i for i in range(n_stages)]  # cumulative upsampling after each stage
        in_chs = (embed_dim, *decoder_channels[:-1])
        self.stages = nn.ModuleList(
            UpStage(cin, cout, first_scale if i == 0 else 2, refine=i < n_stages - 1 or n_stages == 1)
            for i, (cin, cout) in enumerate(zip(in_chs, decoder_channels, strict=True))
        )
        # skip k (deepest first) joins stage min(k, last): extra shallow skips share the finest stage
        self.skip_stage = [min(k, n_stages - 1) for k in range(len(self.skip_depths))]
        self.skips = nn.ModuleList(SkipProjection(embed_dim, decoder_channels[s], scales[s]) for s in self.skip_stage)
        c = decoder_channels[-1]
        self.head = nn.Conv2d(c + 4, 3, kernel_size=1)
        init_vit_weights(self)
        if prefill != "none":  # start exactly at the pre-fill: a zero correction
            nn.init.zeros_(self.head.weight)
            assert self.head.bias is not None  # nn.Conv2d has a bias by default
            nn.init.zeros_(self.head.bias)

    @classmethod
    def from_config(cls, cfg: InpNetModelConfig) -> InpNet:
        """Build from the typed model config (``family: inpnet``)."""
        fields = cfg.model_dump(exclude={"family"})
        return cls(**fields)

    def _pos(self, grid: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        if grid == self._pos_grid:
            return self.pos_embed.to(like.dtype)
        return sincos_pos_embed_2d(self.embed_dim, *grid)[None].to(device=like.device, dtype=like.dtype)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor], tuple[int, int]]:
        """4-channel input (B,4,H,W) -> final tokens (B,N,D), skip tokens by depth, patch grid."""
        grid = grid_of(x.shape[-2], x.shape[-1], self.patch_size)
        tokens = self.patch_embed(x)  # (B, N, D), N = gh*gw in row-major order
        tokens = tokens + self._pos(grid, tokens)
        skips: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks, start=1):
            tokens = block(tokens)
            if i in self.skip_depths:
                skips[i] = tokens
        return self.norm(tokens), skips, grid

    def decode(
        self, tokens: torch.Tensor, skips: dict[int, torch.Tensor], grid: tuple[int, int], x_in: torch.Tensor
    ) -> torch.Tensor:
        """Tokens (B,N,D) + skips -> image logits (B,3,H,W)."""
        b = tokens.shape[0]
        x = tokens.transpose(1, 2).reshape(b, self.embed_dim, *grid)  # (B, D, gh, gw)
        per_stage: list[torch.Tensor | None] = [None] * len(self.stages)
        for depth, stage, proj in zip(self.skip_depths, self.skip_stage, self.skips, strict=True):
            s = proj(skips[depth], grid)  # (B, C_stage, H_stage, W_stage)
            per_stage[stage] = s if per_stage[stage] is None else per_stage[stage] + s
        for up, skip in zip(self.stages, per_stage, strict=True):
            x = up(x, skip)  # (B, C_i, gh*scale_i, gw*scale_i)
        logits: torch.Tensor = self.head(torch.cat([x, x_in], dim=1))  # (B, 3, H, W)
        return logits

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inpaint: image (B,3,H,W) in [0,1], mask (B,1,H,W) 1 = hole -> prediction (B,3,H,W) in (0,1)."""
        check_image_mask(image, mask)
        hole = (mask > 0.5).to(image.dtype)
        if self.patch_view:  # MAE's view: every patch with a hole pixel hidden whole (the loss keeps the true mask)
            hole = patch_view(hole, self.patch_size)
        visible = masked_input(image, hole)  # hole pixels never reach the network
        if self.prefill != "none":
            visible = prefill(self.prefill, visible, hole)  # (B, 3, H, W): the hole filled from known pixels
        base = visible
        visible, hole, (h, w) = pad_to_multiple(visible, hole, self.patch_size)
        x_in = torch.cat([visible, hole], dim=1)  # (B, 4, H', W')
        tokens, skips, grid = self.encode(x_in)  # under autocast: bf16/fp16 matmuls
        # The decoder always runs in the weights' precision (fp32 in training), autocast or
        # not: under CPU bf16 autocast oneDNN's bf16 transposed convolution on AMX CPUs
        # returns wrong values (pytorch/pytorch#148973), and with it InP-Net stopped learning
        # (hole MSE flat at ~0.04) while fp32 learned. The decoder's GroupNorm, 1x1 head and
        # sigmoid are the other parts that bf16 hurts most; together they are ~8% of the
        # FLOPs. See tests/integration/test_learning.py and tests/unit/test_models.py::test_inpnet_decoder_runs_in_fp32...
        dtype = self.head.weight.dtype
        with torch.autocast(device_type=x_in.device.type, enabled=False):
            logits = self.decode(tokens.to(dtype), {d: t.to(dtype) for d, t in skips.items()}, grid, x_in.to(dtype))
            logits = logits[..., :h, :w]
            if self.prefill != "none":
                logits = logits + torch.logit(base.to(dtype), eps=1e-3)  # a correction to the fill
            return torch.sigmoid(logits)
