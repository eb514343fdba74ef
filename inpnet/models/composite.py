"""The one place where a model's prediction is merged with the known pixels.

Masks follow the project convention: float tensors of 0 and 1, shape (B, 1, H, W),
1 = missing (hole). Known pixels come from the input bit for bit: the composite uses
``torch.where`` rather than arithmetic blending so that no rounding can touch them.
"""

from __future__ import annotations

import torch

from inpnet.errors import MaskError, ShapeError


def check_image_mask(image: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise :class:`ShapeError` unless ``image`` is (B, 3, H, W), and :class:`MaskError` unless
    ``mask`` is (B, 1, H, W) with the image's batch and spatial size."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ShapeError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise MaskError(f"mask must have shape (B, 1, H, W), got {tuple(mask.shape)}")
    if mask.shape[0] != image.shape[0] or mask.shape[-2:] != image.shape[-2:]:
        raise MaskError(
            f"mask shape {tuple(mask.shape)} does not match image shape {tuple(image.shape)} "
            "(batch and spatial size must agree)"
        )


def composite(image: torch.Tensor, mask: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Known pixels from ``image``, hole pixels (mask == 1) from ``prediction``.

    Args:
        image: (B, 3, H, W) in [0, 1], the original (its hole pixels are ignored).
        mask: (B, 1, H, W) of 0 and 1, 1 = hole.
        prediction: (B, 3, H, W), the model's output.
    """
    check_image_mask(image, mask)
    if prediction.shape != image.shape:
        raise ShapeError(f"prediction shape {tuple(prediction.shape)} != image shape {tuple(image.shape)}")
    hole = mask > 0.5  # (B, 1, H, W) broadcast over channels
    return torch.where(hole, prediction.to(image.dtype), image)


def masked_input(image: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """The image as a model may see it: hole pixels replaced by ``fill``."""
    check_image_mask(image, mask)
    return torch.where(mask > 0.5, torch.full_like(image, fill), image)
