"""The one adapter over timm: every transformer part the models use is built here.

The models never import timm themselves. Parts are reached through timm's public names and
built by keyword, so a timm release that reorders positional arguments cannot silently
change a model (the supported range is ``timm>=1.0.9,<2``; ``tests/unit/test_models.py`` builds
every part). Masked attention (the MAE encoder with a varying number of visible patches per
image) needs ``Block.forward(x, attn_mask=...)``; :func:`blocks_accept_attn_mask` says whether
the installed timm has it, and the MAE falls back to one image at a time when it does not.

Position embeddings use the 2-D sin-cos layout of facebookresearch/mae
(``get_2d_sincos_pos_embed``): timm's ``build_sincos2d_pos_embed`` orders channels as
[sin(y), sin(x), cos(y), cos(x)], which is not what MAE checkpoints hold, so the layout is
written out in :func:`sincos_pos_embed_2d` and documented there.
"""

from __future__ import annotations

import inspect
from functools import partial

import torch
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.models.vision_transformer import Block
from torch import nn

__all__ = [
    "blocks_accept_attn_mask",
    "init_vit_weights",
    "make_patch_embed",
    "make_vit_block",
    "resample_pos_embed",
    "sincos_pos_embed_2d",
]

# MAE and timm's ViTs use LayerNorm with eps 1e-6; checkpoints were trained with it.
LayerNorm = partial(nn.LayerNorm, eps=1e-6)


def make_vit_block(dim: int, num_heads: int, *, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> nn.Module:
    """A pre-norm ViT block (timm ``Block``) with MAE's settings: qkv bias, LayerNorm eps 1e-6.

    Parameter names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``,
    ``mlp.fc2``) are those of MAE checkpoints.
    """
    if dim % num_heads:
        raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
    return Block(
        dim=dim,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
        drop_path=drop_path,
        norm_layer=LayerNorm,  # type: ignore[arg-type]  # timm types norm_layer as a class; its own models pass partials too
    )


def make_patch_embed(*, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> nn.Module:
    """Non-overlapping patch embedding (timm ``PatchEmbed``): (B,C,H,W) -> (B, H/p*W/p, D).

    ``strict_img_size=False``: the models accept any size that is a multiple of ``patch_size``
    (they pad other sizes themselves, see :func:`inpnet.models.patches.pad_to_multiple`).
    """
    return PatchEmbed(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        embed_dim=embed_dim,
        strict_img_size=False,
    )


def blocks_accept_attn_mask() -> bool:
    """True when timm's ``Block.forward`` takes ``attn_mask`` (newer timm 1.0.x releases)."""
    return "attn_mask" in inspect.signature(Block.forward).parameters


def sincos_pos_embed_2d(embed_dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding in MAE's channel order, shape (grid_h*grid_w, D).

    Tokens are in row-major order (row 0 first). Channels, as in MAE's
    ``get_2d_sincos_pos_embed`` (whose meshgrid puts the column index first):

    - ``[0, D/4)``: sin(x * w_k), ``[D/4, D/2)``: cos(x * w_k), with x the column index;
    - ``[D/2, 3D/4)``: sin(y * w_k), ``[3D/4, D)``: cos(y * w_k), with y the row index;

    where ``w_k = 10000 ** (-k / (D/4))`` for ``k = 0 .. D/4 - 1``.
    """
    if embed_dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}")
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (D/4,)
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )  # each (grid_h, grid_w)

    def one_axis(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega  # (N, D/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (N, D/2)

    return torch.cat([one_axis(xs), one_axis(ys)], dim=1).float()  # (N, D)


def resample_pos_embed(
    pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int], *, num_prefix_tokens: int
) -> torch.Tensor:
    """Bicubic resampling of a (1, prefix + old_h*old_w, D) table to a new grid (timm).

    Prefix tokens (the class token's row) are kept as they are.
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    resampled: torch.Tensor = resample_abs_pos_embed(  # timm leaves its return type unannotated
        pos_embed,
        new_size=list(new_grid),
        old_size=list(old_grid),
        num_prefix_tokens=num_prefix_tokens,
    )
    return resampled


def init_vit_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears (and patch projection), zero biases, unit norms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            w = m.proj.weight  # (D, C, p, p): initialised like a linear on flattened patches
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            if m.proj.bias is not None:
                nn.init.zeros_(m.proj.bias)
