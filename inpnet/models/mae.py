"""The MAE baseline (He et al., facebookresearch/mae ``models_mae.py``) as an inpainter.

The encoder sees visible patches only; the decoder adds mask tokens at the masked
positions and predicts every patch's pixels. Differences from the original, all forced by
inpainting:

- Masking comes from the hole mask, not from random sampling: a patch holding any hole
  pixel is masked (``inpnet.models.patches.patch_mask``), so the encoder never sees a hole
  pixel. Fine-grained masks (scattered pixels) therefore mask most patches.
- Images in one batch have different numbers of visible patches. Visible tokens are
  gathered to the front (original order kept) and padded to the batch's largest count; pad
  slots carry zeros and are excluded from attention as keys by a boolean attention mask,
  so they change nothing; their outputs are dropped and their decoder slots get mask
  tokens. When every image has the same count no mask is built (the fused kernel runs).
  With a timm whose ``Block`` lacks ``attn_mask`` the encoder runs one image at a time.
  The count is data-dependent, so ``torch.compile`` splits the graph there (it still works).
- Inputs are ImageNet-normalised and the decoder predicts normalised pixels, as in the
  released checkpoints; the output is de-normalised and clamped to [0, 1] with a
  straight-through gradient (the linear head can be loaded from a checkpoint unchanged).
- ``norm_pix`` (MAE's ``norm_pix_loss``): the decoder predicts each patch normalised by its
  own mean and variance, which a hole patch cannot know. The output un-normalises with the
  statistics of the *known* pixels around the patch (its 3x3-patch neighbourhood, else the
  whole image; :func:`~inpnet.models.patches.known_patch_stats`), so inference needs nothing
  but the input. In training mode that output is not clamped, so that the loss
  (:func:`inpnet.losses.masked_patch_loss`) recovers the decoder's output exactly.

Parameter and buffer names are those of MAE checkpoints (see :mod:`inpnet.models.mae_weights`).
Position embeddings are the fixed sin-cos table (with a zero row for the class token), kept
as persistent buffers so checkpoints carry them; other patch grids are served by bicubic
resampling of the stored table.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from inpnet.config import MAEModelConfig
from inpnet.models.blocks import (
    LayerNorm,
    blocks_accept_attn_mask,
    init_vit_weights,
    make_patch_embed,
    make_vit_block,
    resample_pos_embed,
    sincos_pos_embed_2d,
)
from inpnet.models.composite import check_image_mask, masked_input
from inpnet.models.patches import grid_of, known_patch_stats, pad_to_multiple, patch_mask, unpatchify

__all__ = ["MAE"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pos_table(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """(1, 1 + gh*gw, D): a zero row for the class token, then sin-cos rows (MAE's layout)."""
    return torch.cat([torch.zeros(1, dim), sincos_pos_embed_2d(dim, *grid)], dim=0)[None]


def _tracing() -> bool:
    """Whether the forward is being traced into a graph (TorchScript or ``torch.export``, the ONNX exporter's)."""
    tracing: bool = torch.jit.is_tracing()  # type: ignore[attr-defined,no-untyped-call]  # public, but untyped and not re-exported
    return tracing or torch.compiler.is_exporting()


def _clamp01_straight_through(x: torch.Tensor) -> torch.Tensor:
    return x + (x.clamp(0.0, 1.0) - x).detach()


class MAE(nn.Module):
    """Masked autoencoder; ``forward(image, mask) -> (B,3,H,W)`` in [0, 1]."""

    # buffers (registered in __init__)
    pos_embed: torch.Tensor
    decoder_pos_embed: torch.Tensor
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(
        self,
        *,
        img_size: int = 128,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 6,
        decoder_embed_dim: int = 256,
        decoder_depth: int = 2,
        decoder_num_heads: int = 8,
        mlp_ratio: float = 4.0,
        norm_pix: bool = False,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.norm_pix = norm_pix
        self.grid = grid_of(img_size, img_size, patch_size)
        self.patch_embed = make_patch_embed(img_size=img_size, patch_size=patch_size, in_chans=3, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", _pos_table(embed_dim, self.grid))  # (1, 1+L, D), persistent
        self.blocks = nn.ModuleList(make_vit_block(embed_dim, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth))
        self.norm = LayerNorm(embed_dim)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", _pos_table(decoder_embed_dim, self.grid))  # (1, 1+L, Dd)
        self.decoder_blocks = nn.ModuleList(
            make_vit_block(decoder_embed_dim, decoder_num_heads, mlp_ratio=mlp_ratio) for _ in range(decoder_depth)
        )
        self.decoder_norm = LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * 3)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        init_vit_weights(self)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self._masked_attention = blocks_accept_attn_mask()

    @classmethod
    def from_config(cls, cfg: MAEModelConfig, *, pretrained: bool = True) -> MAE:
        """Build from the typed config; loads ``cfg.pretrained`` (a local file) when set and ``pretrained``."""
        model = cls(**cfg.model_dump(exclude={"family", "norm_pix_loss", "pretrained"}), norm_pix=cfg.norm_pix_loss)
        if pretrained and cfg.pretrained:
            from inpnet.models.mae_weights import load_mae_weights

            load_mae_weights(model, cfg.pretrained)
        return model

    # ------------------------------------------------------------------ encoder

    def _tables(self, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Position tables for ``grid``: the stored ones, resampled when the grid differs."""
        return (
            resample_pos_embed(self.pos_embed, grid, self.grid, num_prefix_tokens=1),
            resample_pos_embed(self.decoder_pos_embed, grid, self.grid, num_prefix_tokens=1),
        )

    def _run_encoder(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Transformer over (B, 1+K, D) with pad slots (``valid`` False) excluded as keys."""
        if not _tracing() and bool(valid.all()):
            for block in self.blocks:
                x = block(x)
        elif not self._masked_attention:  # old timm: each image with its own visible tokens only
            out = torch.zeros_like(x)
            for i in range(x.shape[0]):
                n = int(valid[i].sum())
                xi = x[i : i + 1, :n]
                for block in self.blocks:
                    xi = block(xi)
                out[i : i + 1, :n] = xi
            x = out
        else:
            attn_mask = valid[:, None, None, :]  # (B, 1, 1, 1+K): True = may be attended to
            for block in self.blocks:
                x = block(x, attn_mask=attn_mask)
        encoded: torch.Tensor = self.norm(x)
        return encoded

    def encode(
        self, x: torch.Tensor, masked: torch.Tensor, pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Visible patches only.

        Args:
            x: normalised image (B, 3, H, W) with hole pixels already zeroed.
            masked: (B, L) bool, True = masked patch.
            pos: (1, 1+L, D) position table.

        Returns:
            latent (B, 1+K, D) (class token first), ids_keep (B, K) patch index of each slot,
            valid (B, K) False for pad slots. K = the batch's largest visible count.
        """
        tokens = self.patch_embed(x) + pos[:, 1:]  # (B, L, D)
        b, _, d = tokens.shape
        n_visible = (~masked).sum(dim=1)  # (B,)
        # a traced or exported graph cannot size a tensor by the mask's content: it keeps all L
        # slots, the invisible ones padded and masked out as keys, which computes the same output
        k = tokens.shape[1] if _tracing() else int(n_visible.max())
        # visible patches first, each group in raster order: a sort on unique keys (mask bit, index),
        # what a stable sort on the mask bit gives, in a form ONNX has (TopK; no stable sort there)
        order = masked.to(torch.int64) * masked.shape[1] + torch.arange(masked.shape[1], device=x.device)  # (B, L)
        ids_keep = torch.argsort(order, dim=1)[:, :k]  # (B, K)
        valid = torch.arange(k, device=x.device)[None] < n_visible[:, None]  # (B, K)
        visible = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, d))  # (B, K, D)
        visible = visible * valid[..., None].to(visible.dtype)  # pad slots hold zeros, no masked content
        cls = (self.cls_token + pos[:, :1]).expand(b, -1, -1)  # (B, 1, D)
        seq = torch.cat([cls, visible], dim=1)  # (B, 1+K, D)
        valid_seq = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)  # (B, 1+K)
        return self._run_encoder(seq, valid_seq), ids_keep, valid

    # ------------------------------------------------------------------ decoder

    def decode(
        self, latent: torch.Tensor, ids_keep: torch.Tensor, valid: torch.Tensor, n_patches: int, pos: torch.Tensor
    ) -> torch.Tensor:
        """latent (B, 1+K, D) -> per-patch predictions (B, L, p*p*3) in normalised pixels."""
        y: torch.Tensor = self.decoder_embed(latent)  # (B, 1+K, Dd)
        b, _, dd = y.shape
        slots = torch.where(valid[..., None], y[:, 1:], self.mask_token.to(y.dtype))  # (B, K, Dd)
        full = self.mask_token.to(y.dtype).expand(b, n_patches, dd)  # (B, L, Dd)
        full = full.scatter(1, ids_keep[..., None].expand(-1, -1, dd), slots)  # visible back in place
        y = torch.cat([y[:, :1], full], dim=1) + pos  # (B, 1+L, Dd)
        for block in self.decoder_blocks:
            y = block(y)
        y = self.decoder_pred(self.decoder_norm(y))  # (B, 1+L, p*p*3)
        return y[:, 1:]  # (B, L, p*p*3)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inpaint: image (B,3,H,W) in [0,1], mask (B,1,H,W) 1 = hole -> prediction (B,3,H,W) in [0,1]."""
        check_image_mask(image, mask)
        hole = (mask > 0.5).to(image.dtype)
        x = (masked_input(image, hole) - self.pixel_mean) / self.pixel_std
        x, hole, (h, w) = pad_to_multiple(x, hole, self.patch_size)
        grid = grid_of(x.shape[-2], x.shape[-1], self.patch_size)
        pos, dec_pos = self._tables(grid)
        masked = patch_mask(hole, self.patch_size)  # (B, L)
        latent, ids_keep, valid = self.encode(x, masked, pos.to(x.dtype))
        pred = self.decode(latent, ids_keep, valid, masked.shape[1], dec_pos.to(latent.dtype))
        if self.norm_pix:  # per-patch normalised -> normalised pixels, with known-pixel statistics
            mean, std = known_patch_stats(x, hole, self.patch_size)  # (B, L, 1) each
            pred = pred.float() * std + mean
        out = unpatchify(pred, self.patch_size, grid) * self.pixel_std + self.pixel_mean  # (B, 3, H', W')
        out = out[..., :h, :w]
        if self.norm_pix and self.training:
            return out
        return _clamp01_straight_through(out)
