"""LPIPS (Zhang et al. 2018), computed only when the backbone weights are given as a local file.

LPIPS needs two sets of weights: the ImageNet backbone (AlexNet, VGG16 or SqueezeNet 1.1 as
torchvision publishes them, e.g. ``alexnet-owt-7be5be79.pth``) and small linear heads. The
heads ship inside torchmetrics; the backbone would be downloaded by torchvision, which we
never let happen: the backbone is built with random weights and then overwritten from
``weights_path``. Without the file :func:`lpips_available` says why and :class:`LPIPSScorer`
raises ``DataError("LPIPS unavailable: ...")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from inpnet.errors import DataError

__all__ = ["LPIPSScorer", "lpips_available"]

Net = Literal["alex", "vgg", "squeeze"]
_HINT = "a torchvision backbone file such as alexnet-owt-7be5be79.pth (set evaluate.lpips_weights)"


def lpips_available(weights_path: str | Path | None) -> tuple[bool, str]:
    """Whether LPIPS can be computed with this backbone file, and the reason when it cannot."""
    if weights_path is None or str(weights_path) == "":
        return False, f"no LPIPS backbone weights configured; need {_HINT}"
    path = Path(weights_path)
    if not path.is_file() or path.stat().st_size == 0:
        return False, f"LPIPS backbone weights {path} not found or empty; need {_HINT}"
    return True, "ok"


class LPIPSScorer:
    """Callable: ``(pred, target)`` (B, 3, H, W) in [0, 1] -> (B,) LPIPS distances (lower is closer)."""

    def __init__(self, weights_path: str | Path | None, *, net: Net = "alex", device: str | torch.device = "cpu") -> None:
        ok, reason = lpips_available(weights_path)
        if not ok or weights_path is None:  # lpips_available refuses None
            raise DataError(f"LPIPS unavailable: {reason}")
        from torchmetrics.functional.image.lpips import _LPIPS

        try:
            backbone = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch.load raises many types; all become one DataError
            first = (str(err).strip().splitlines() or [repr(err)])[0]
            raise DataError(f"LPIPS unavailable: {weights_path} does not load ({type(err).__name__}: {first})") from None
        # pnet_rand: torchvision builds the backbone without downloading; the heads come with torchmetrics
        model = _LPIPS(pretrained=True, net=net, pnet_rand=True)
        target = model.net.state_dict()
        # our slices hold torchvision's ``features`` modules under their own indices:
        # "slice2.3.weight" is torchvision's "features.3.weight"
        mapped = {}
        for key in target:
            source = "features." + key.split(".", 1)[1]
            if source not in backbone:
                raise DataError(
                    f"LPIPS unavailable: {weights_path} lacks {source!r}; is it the torchvision {net} backbone?"
                )
            mapped[key] = backbone[source]
        try:
            model.net.load_state_dict(mapped)
        except RuntimeError as err:
            raise DataError(f"LPIPS unavailable: {weights_path} does not fit the {net} backbone ({err})") from None
        self.model = model.to(device).eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"lpips: pred and target must both be (B, 3, H, W); got {tuple(pred.shape)} and {tuple(target.shape)}")
        p = pred.to(self.device, torch.float32).clamp(0, 1)
        t = target.to(self.device, torch.float32).clamp(0, 1)
        dist: torch.Tensor = self.model(p, t, normalize=True)  # (B, 1, 1, 1)
        return dist.flatten()  # (B,)
