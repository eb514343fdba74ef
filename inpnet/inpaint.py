"""Inference on arbitrary images: any size, known pixels unchanged bit for bit.

Every model family works on a fixed grid (its ``img_size``). :class:`Inpainter` wraps such a
model so that it accepts any (H, W): an image smaller than the grid is padded by reflection
(the padding counts as known context), a larger one is cut into overlapping grid-sized tiles
whose predictions are blended with a tent window, and the result is cropped back to (H, W).
Only tiles that contain a hole run through the model.

The file-level functions read 8-bit images and masks (255 = hole, binarised at 50%),
composite with :func:`inpnet.models.composite.composite` and write PNG, so every known
pixel of the output equals the input byte for byte.

Documented results for edge cases:

* a mask without holes returns the input unchanged;
* an all-hole mask is refused with :class:`MaskError` (there is no context to inpaint from);
* no mask at all (``mask=None``) is whole-image restoration at ratio 0, allowed for InP-Net
  only: the output is the model's prediction for every pixel.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inpnet.errors import CheckpointError, DataError, MaskError, OutputError, RegistryError
from inpnet.images import IMAGE_EXTENSIONS, decode_image, decode_mask, encode_png
from inpnet.models.composite import check_image_mask, composite
from inpnet.outputs import FolderLock, write_atomic, writing_output

__all__ = [
    "Inpainter",
    "inpaint_files",
    "inpaint_folder",
    "inpaint_image",
    "inpainter_from_files",
    "load_inpainter",
]

log = logging.getLogger(__name__)

RESTORING_FAMILIES = ("inpnet",)


class Inpainter(nn.Module):
    """A fixed-grid model made to accept any image size by reflection padding and tiling.

    Args:
        model: ``forward(image (B,3,g,g), mask (B,1,g,g)) -> prediction (B,3,g,g)``.
        grid: the model's input size ``g`` (its ``img_size``).
        family: the model family; only InP-Net restores whole images (empty masks).
        overlap: pixels shared by neighbouring tiles; default ``grid // 4``.
        tile_batch: tiles per forward call.
    """

    def __init__(self, model: nn.Module, *, grid: int, family: str, overlap: int | None = None, tile_batch: int = 16):
        super().__init__()
        self.model = model
        self.grid = int(grid)
        self.family = family
        self.overlap = self.grid // 4 if overlap is None else int(overlap)
        if not 0 <= self.overlap < self.grid:
            raise ValueError(f"overlap must lie in [0, {self.grid}), got {self.overlap}")
        self.tile_batch = tile_batch

    @property
    def restores(self) -> bool:
        """Whether the family supports whole-image restoration (mask omitted, ratio 0)."""
        return self.family in RESTORING_FAMILIES

    @torch.no_grad()
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Prediction (B, 3, H, W) in [0, 1] for any H, W (not composited).

        Where no tile ran (no hole nearby) the prediction is the input itself. An empty mask
        over the whole batch means restoration: every tile runs.
        """
        check_image_mask(image, mask)
        _, _, height, width = image.shape
        g = self.grid
        pad_h, pad_w = max(0, g - height), max(0, g - width)
        if pad_h or pad_w:
            # reflect needs pad < size; replicate covers images thinner than the padding
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            image_p = nn.functional.pad(image, (0, pad_w, 0, pad_h), mode=mode)
            mask_p = nn.functional.pad(mask, (0, pad_w, 0, pad_h), value=0.0)
        else:
            image_p, mask_p = image, mask
        restore = not bool((mask_p > 0.5).any())
        ph, pw = image_p.shape[-2:]
        positions = [
            (y, x)
            for y in _starts(ph, g, self.overlap)
            for x in _starts(pw, g, self.overlap)
            if restore or bool((mask_p[:, :, y : y + g, x : x + g] > 0.5).any())
        ]
        acc = torch.zeros_like(image_p, dtype=torch.float32)
        weight = torch.zeros_like(mask_p, dtype=torch.float32)
        window = _tent(g, self.overlap, image.device)  # (1, 1, g, g)
        param = next(self.model.parameters(), None)  # an exported graph (inpnet.export) has none
        dtype = image.dtype if param is None else param.dtype
        for i in range(0, len(positions), self.tile_batch):
            chunk = positions[i : i + self.tile_batch]
            # tiles of every batch item stacked: (len(chunk) * B, C, g, g)
            img_t = torch.cat([image_p[:, :, y : y + g, x : x + g] for y, x in chunk])
            msk_t = torch.cat([mask_p[:, :, y : y + g, x : x + g] for y, x in chunk])
            pred = self.model(img_t.to(dtype), msk_t.to(dtype)).float().clamp(0, 1)
            for (y, x), tile in zip(chunk, pred.split(image.shape[0]), strict=True):
                acc[:, :, y : y + g, x : x + g] += tile * window
                weight[:, :, y : y + g, x : x + g] += window
        ran = weight > 0
        blended = torch.where(ran, acc / weight.clamp_min(1e-8), image_p.float())
        return blended[:, :, :height, :width].to(image.dtype)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis covering ``length`` (>= tile) with at least ``overlap`` shared."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def _tent(size: int, overlap: int, device: torch.device) -> torch.Tensor:
    """(1, 1, size, size) blending window: ramps up over ``overlap`` pixels at each border."""
    if overlap == 0:
        return torch.ones(1, 1, size, size, device=device)
    idx = torch.arange(size, device=device, dtype=torch.float32)
    ramp = torch.minimum(idx + 1, size - idx).clamp(max=overlap + 1) / (overlap + 1)
    return (ramp[:, None] * ramp[None, :])[None, None]


# ---------------------------------------------------------------------------- arrays


def inpaint_image(
    inpainter: Inpainter,
    image: np.ndarray,
    mask: np.ndarray | None,
    *,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Inpaint one 8-bit image.

    Args:
        inpainter: the wrapped model (already on ``device``).
        image: (H, W, 3) uint8.
        mask: (H, W) bool, True = hole; ``None`` = whole-image restoration (InP-Net only).

    Returns:
        (H, W, 3) uint8; known pixels equal ``image`` exactly.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"image must be an (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if mask is None:
        if not inpainter.restores:
            raise MaskError(
                f"a mask is required for the {inpainter.family!r} family; "
                f"only {', '.join(RESTORING_FAMILIES)} restores whole images without one"
            )
        hole = np.zeros((height, width), dtype=bool)
    else:
        if mask.shape != (height, width):
            raise MaskError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but the image is {width}x{height}; they must match"
            )
        hole = mask.astype(bool)
        if hole.all():
            raise MaskError("the mask marks every pixel as a hole; there are no known pixels to inpaint from")
        if not hole.any():
            return image.copy()
    x = torch.from_numpy(image.copy()).to(device).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)
    m = torch.from_numpy(hole).to(device)[None, None].float()  # (1, 1, H, W)
    pred = inpainter(x, m)
    out = pred if mask is None else composite(x, m, pred)
    # known pixels are k/255 in float32; *255 and rounding gives k back exactly
    return (out[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


# --------------------------------------------------------------------------- loading


def inpainter_from_files(
    weights: str | Path, config: str | Path, *, device: str = "cpu"
) -> tuple[Inpainter, dict[str, Any]]:
    """An :class:`Inpainter` built from ``config.json`` and safetensors weights."""
    import safetensors.torch

    from inpnet.config import ResolvedVariant
    from inpnet.models.build import build_model

    config, weights = Path(config), Path(weights)
    try:
        variant = ResolvedVariant.model_validate_json(config.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{config}: not a readable resolved-variant config ({err})") from None
    model = build_model(variant.model, pretrained=False)  # weights come from the artifact
    try:
        safetensors.torch.load_model(model, str(weights), strict=True, device=str(device))
    except (OSError, RuntimeError) as err:
        raise CheckpointError(f"{weights}: weights do not load into {variant.name} ({err})") from None
    model.to(device).eval()
    return Inpainter(model, grid=variant.model.img_size, family=variant.model.family).eval(), _info(
        variant, weights.parent
    )


def _info(variant: Any, source: str | Path, name: str | None = None, version: str | None = None) -> dict[str, Any]:
    """What a loaded model is and where it came from (plain values, for reports)."""
    from inpnet.models.build import inference_settings

    return {
        **inference_settings(variant.model),  # e.g. CM-GAN's latent
        "family": variant.model.family,
        "variant": variant.name,
        "img_size": variant.model.img_size,
        "source": str(source),
        "name": name,
        "version": version,
    }


def _pyfunc_artifacts(model_dir: Path) -> tuple[Path, Path]:
    import yaml

    spec = yaml.safe_load((model_dir / "MLmodel").read_text())
    arts = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {})
    try:
        return model_dir / arts["weights"]["path"], model_dir / arts["config"]["path"]
    except KeyError:
        raise RegistryError(
            f"{model_dir}: MLmodel lists no inpnet 'weights'/'config' artifacts; not an inpnet model"
        ) from None


def load_inpainter(
    uri_or_dir: str | Path, *, device: str = "cpu", tracking_uri: str | None = None
) -> tuple[Inpainter, dict[str, Any]]:
    """Load a model for inference from the registry, a pulled folder or a checkpoint folder.

    Args:
        uri_or_dir: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, a folder written by
            ``inpnet pull`` (or any pyfunc folder of an inpnet model), or a training checkpoint
            folder (``config.json`` + ``model.safetensors``). Exported files: :func:`inpnet.export.load_model_or_export`.
        device: torch device for the weights.
        tracking_uri: registry to use for ``models:/`` URIs (default: MLflow's own default).

    Returns:
        ``(inpainter, info)``: an :class:`Inpainter` (``inpainter(image, mask)``
        on any size; prediction not composited) and an info dict (family, variant, img_size,
        source, name, version).
    """
    from inpnet.registry.store import CONFIG_FILE, download_model

    text = str(uri_or_dir)
    if text.startswith("models:/"):
        with tempfile.TemporaryDirectory(prefix="inpnet-model-") as tmp:
            local, mv = download_model(text, Path(tmp) / "model", tracking_uri=tracking_uri)
            inpainter, info = inpainter_from_files(*_pyfunc_artifacts(local), device=device)
        return inpainter, {**info, "source": text, "name": mv.name, "version": str(mv.version)}
    path = Path(uri_or_dir)
    if (path / "MLmodel").is_file():
        inpainter, info = inpainter_from_files(*_pyfunc_artifacts(path), device=device)
        meta = _read_json(path / "registry.json")
        return inpainter, {**info, "source": str(path), "name": meta.get("name"), "version": meta.get("version")}
    if (path / CONFIG_FILE).is_file():
        from inpnet.train.checkpoint import load_model

        model, variant = load_model(path, ema=True, device=device)
        return Inpainter(model, grid=variant.model.img_size, family=variant.model.family).eval(), _info(variant, path)
    raise RegistryError(
        f"{uri_or_dir}: neither models:/NAME@ALIAS, a pulled model folder (with MLmodel) nor a checkpoint folder (with config.json)"
    )


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


# ----------------------------------------------------------------------------- files


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path.read_bytes()


def inpaint_files(
    inpainter: Inpainter,
    image: Path,
    mask: Path | None,
    out: Path,
    *,
    invert_mask: bool = False,
    device: str | torch.device = "cpu",
) -> Path:
    """Inpaint ``image`` with ``mask`` into the PNG file ``out`` (written only on success).

    Raises:
        OutputError: ``out`` is a folder or cannot be written (checked before inference).
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise DataError(f"{out}: output must be a .png file (a lossy format would change known pixels)")
    if out.is_dir():
        raise OutputError(
            f"{out}: a folder of that name exists; pass the path of a .png file (or an image folder for folder mode)"
        )
    with writing_output(out, "cannot create the folder for the output"):
        out.parent.mkdir(parents=True, exist_ok=True)
    arr = decode_image(_read(Path(image)), source=str(image))
    hole = None if mask is None else decode_mask(_read(Path(mask)), source=str(mask), invert=invert_mask)
    result = inpaint_image(inpainter, arr, hole, device=device)
    write_atomic(out, encode_png(result))
    return out


def inpaint_folder(
    inpainter: Inpainter,
    images: Path,
    masks: Path | None,
    out: Path,
    *,
    invert_mask: bool = False,
    device: str | torch.device = "cpu",
) -> list[Path]:
    """Inpaint every image in ``images`` with the mask of the same stem in ``masks``.

    All outputs are made in a temporary folder inside ``out`` and moved in at the end, so a
    bad file anywhere leaves ``out`` as it was.
    """
    images, out = Path(images), Path(out)
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if images.is_dir() else []
    if not files:
        raise DataError(f"{images}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    pairs: list[tuple[Path, Path | None]] = []
    if masks is not None:
        if not Path(masks).is_dir():
            raise DataError(f"{masks}: mask folder not found (folder mode pairs images and masks by file stem)")
        by_stem = {p.stem: p for p in Path(masks).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
        missing = [p.name for p in files if p.stem not in by_stem]
        if missing:
            raise DataError(f"{masks}: no mask with the stem of {missing[:5]} ({len(missing)} missing)")
        pairs = [(p, by_stem[p.stem]) for p in files]
    else:
        pairs = [(p, None) for p in files]
    with FolderLock(out):
        with writing_output(out):
            out.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".inpnet-", dir=out))
        try:
            for img, msk in pairs:
                inpaint_files(inpainter, img, msk, staging / f"{img.stem}.png", invert_mask=invert_mask, device=device)
            written = []
            with writing_output(out):
                for img, _ in pairs:
                    os.replace(staging / f"{img.stem}.png", out / f"{img.stem}.png")
                    written.append(out / f"{img.stem}.png")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("inpainted %d images into %s", len(written), out)
    return written
