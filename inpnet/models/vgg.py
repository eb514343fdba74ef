"""VGG-19 features for the perceptual loss, from a local, checksummed weights file.

Why VGG-19: CM-GAN trains with LaMa's high-receptive-field perceptual loss, whose backbone
is a segmentation ResNet trained on ADE20k; VGG-19 ImageNet features (the pix2pixHD/SPADE
feature loss) are the published, widely mirrored alternative, and torchvision builds the
architecture without downloading anything (``torchvision.models.vgg19(weights=None)``).

What is compared: the activations after ReLU at :data:`VGG19_LAYERS` (relu1_1 ... relu5_1,
indices into ``vgg19().features``); the network is cut after the last of them. Inputs are
images in [0, 1], normalised with the ImageNet mean and std the weights were trained with.

Weights: a ``.safetensors`` file, or torchvision's ``vgg19-dcbb9e9d.pth`` read with
``torch.load(weights_only=True)`` (never unpickled otherwise; ``inpnet weights fetch --name
vgg19`` downloads it). Keys are torchvision's (``features.<i>.weight``, with or without the
``features.`` prefix); the classifier is dropped. The file's sha256 must match the one in
params (full, or a prefix of 8+ hex digits as in torch hub file names) before it is read.
The module is frozen: no parameter requires a gradient and it stays in eval mode.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from inpnet.errors import CheckpointError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "VGG19_LAYERS", "VGG19Features", "load_vgg19_features"]

log = logging.getLogger(__name__)

# ReLU outputs of torchvision's vgg19().features: conv{1..5}_1 are at 0, 5, 10, 19, 28
VGG19_LAYERS: dict[str, int] = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """Frozen VGG-19 ``features`` up to the deepest requested layer.

    Args:
        layers: names from :data:`VGG19_LAYERS`, returned in this order by :meth:`forward`.
    """

    def __init__(self, layers: tuple[str, ...] = tuple(VGG19_LAYERS)) -> None:
        super().__init__()
        from torchvision.models import vgg19

        unknown = [n for n in layers if n not in VGG19_LAYERS]
        if unknown or not layers:
            raise ValueError(f"VGG-19 layers must be some of {list(VGG19_LAYERS)}, got {list(layers)}")
        self.layers = tuple(layers)
        self.taps = [VGG19_LAYERS[n] for n in layers]
        self.body = vgg19(weights=None).features[: max(self.taps) + 1]
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        """Always eval: the backbone is a fixed measuring instrument, not a trained part."""
        return super().train(False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> one activation (B, C_l, H / 2^k, W / 2^k) per layer."""
        x = (image - self.mean) / self.std
        out: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.taps:
                out[i] = x
        return [out[i] for i in self.taps]


def _checksum_ok(digest: str, expected: str) -> bool:
    return digest.lower().startswith(expected.lower()) and len(expected) >= 8


def load_vgg19_features(
    path: str | Path, sha256: str, *, layers: tuple[str, ...] = tuple(VGG19_LAYERS), key: str = "weights"
) -> VGG19Features:
    """A frozen :class:`VGG19Features` with the weights of ``path``, verified against ``sha256``.

    Args:
        sha256: the file's full sha256, or a prefix of at least 8 hex digits.
        key: the params key that named the file, for error messages.

    Raises:
        CheckpointError: the file is missing, its checksum differs, or it lacks a layer's weights.
    """
    from inpnet.models.mae_weights import read_state_dict
    from inpnet.registry.tracking import file_sha256

    path = Path(path)
    digest = file_sha256(path)
    if digest is None:
        raise CheckpointError(f"VGG-19 weights {path} not found ({key})")
    if not _checksum_ok(digest, sha256):
        raise CheckpointError(
            f"VGG-19 weights {path}: sha256 {digest} does not match {sha256} ({key}_sha256); "
            "the file is corrupt or not the one the params name"
        )
    state = read_state_dict(path, what="VGG-19 weights", params_key=key)
    model = VGG19Features(layers)
    own = model.body.state_dict()
    mapped = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    missing = sorted(k for k in own if k not in mapped)
    if missing:
        raise CheckpointError(f"VGG-19 weights {path}: missing {missing[:6]}; expected torchvision vgg19 keys")
    for name, tensor in own.items():
        if mapped[name].shape != tensor.shape:
            raise CheckpointError(
                f"VGG-19 weights {path}: {name} has shape {tuple(mapped[name].shape)}, VGG-19 needs {tuple(tensor.shape)}"
            )
    model.body.load_state_dict({k: mapped[k] for k in own})
    log.info("perceptual loss: VGG-19 %s from %s (sha256 %s...)", ",".join(layers), path, digest[:12])
    return model
