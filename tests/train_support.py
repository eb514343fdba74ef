"""Helpers for the trainer tests: a synthetic loader, params for tiny variants, and small
stand-ins for modules of other areas that are installed only while those do not exist yet."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from inpnet.config import ResolvedVariant, load_params

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_variant(name: str = "inpnet_tiny", **train: Any) -> ResolvedVariant:
    """A tiny variant from the repository's params.yaml with ``train`` overrides."""
    v = load_params(REPO_ROOT / "params.yaml").variant(name)
    merged = {**v.train.model_dump(), **train}
    return ResolvedVariant(name=v.name, model=v.model, train=type(v.train).model_validate(merged))


def synthetic_loader(shards: Path, *, image_size: int, batch_size: int, seed: int = 0, epoch: int = 0,
                     rank: int = 0, world_size: int = 1, batches: int = 6, **_: Any) -> Iterator[dict[str, Any]]:
    """``make_loader`` stand-in: smooth colour ramps, a function of (seed, epoch, rank) only."""
    rng = np.random.default_rng([seed, epoch, rank])
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    for i in range(batches):
        a = rng.uniform(0, 1, size=(batch_size, 3, 3))
        img = a[:, :, 0, None, None] * xx + a[:, :, 1, None, None] * yy + 0.5 * a[:, :, 2, None, None]
        img = torch.from_numpy(img / img.max(axis=(2, 3), keepdims=True)).float()  # (B,3,S,S)
        keys = [f"e{epoch}r{rank}b{i}n{j}" for j in range(batch_size)]
        yield {"image": img, "label": torch.zeros(batch_size, dtype=torch.long), "key": keys}


# ------------------------------------------------------------------ stand-ins (temporary)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 3, 3, padding=1))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from inpnet.models.composite import masked_input

        return torch.sigmoid(self.body(torch.cat([masked_input(image, mask), mask], 1)))


class _Disc(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 4, 2, 1))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([image * 2 - 1, mask], 1))


def _recon_loss(image, mask, pred):  # noqa: ANN001, ANN202
    err = (pred - image) ** 2
    hole = (err * mask).sum() / (mask.sum() * 3 + 1e-8)
    valid = (err * (1 - mask)).sum() / ((1 - mask).sum() * 3 + 1e-8)
    return hole + 0.1 * valid, {"hole": hole, "valid": valid}


def _build_module() -> types.ModuleType:
    m = types.ModuleType("inpnet.models.build")
    m.build_model = lambda cfg: _Net()
    m.build_discriminator = lambda kind, *, img_size, base_channels=64: _Disc()
    m.build_loss = lambda model_cfg, loss_cfg: _recon_loss
    return m


def _losses_module() -> types.ModuleType:
    import torch.nn.functional as F

    m = types.ModuleType("inpnet.losses")
    m.d_loss = lambda kind, real, fake: F.softplus(-real).mean() + F.softplus(fake).mean()
    m.g_loss = lambda kind, fake: F.softplus(-fake).mean()

    def r1_penalty(d, real, mask, masked=False):  # noqa: ANN001, ANN202
        real = real.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(d(real, mask).sum(), real, create_graph=True)
        return g.pow(2).flatten(1).sum(1).mean()

    m.r1_penalty = r1_penalty
    m.gradient_penalty = lambda d, real, fake, mask: r1_penalty(d, fake, mask)
    return m


def _masks_module() -> types.ModuleType:
    m = types.ModuleType("inpnet.masks")

    class MaskMixture:
        def __init__(self, cfg: Any, *, seed: int = 0) -> None:
            self.cfg = cfg

        def sample(self, batch: int, height: int, width: int, step: int, generator: np.random.Generator,
                   keys: Any = None) -> torch.Tensor:
            out = np.zeros((batch, 1, height, width), np.float32)
            for b in range(batch):
                h, w = generator.integers(height // 4, height // 2, size=2)
                y, x = generator.integers(0, height - h), generator.integers(0, width - w)
                out[b, 0, y : y + h, x : x + w] = 1
            return torch.from_numpy(out)

    m.MaskMixture = MaskMixture
    return m


_STANDINS = {"inpnet.models.build": _build_module, "inpnet.losses": _losses_module, "inpnet.masks": _masks_module}


def install_standins(monkeypatch: Any) -> list[str]:
    """Put stand-ins in sys.modules for the modules other areas have not written yet."""
    installed = []
    for name, make in _STANDINS.items():
        try:
            importlib.import_module(name)
        except ImportError:
            monkeypatch.setitem(sys.modules, name, make())
            installed.append(name)
    return installed


def write_shards(root: Path, n: int = 16) -> Path:
    """Real training shards (via the shard stage) of ``n`` small JPEGs; returns the split folder."""
    from places_tar import build_train_tar

    from inpnet.config import ShardConfig
    from inpnet.data.shard import shard_tar

    places = build_train_tar(root / "raw", n_good=n, bad=False, sizes=(48, 40))
    out = root / "shards" / "train"
    shard_tar(places.tar, places.filelist, "train", out, ShardConfig(samples_per_shard=4, shard_multiple=4))
    return out


def write_params(path: Path, variant: str = "inpnet_tiny", **train: Any) -> Path:
    """The repository's params.yaml with ``train`` overrides for ``variant``."""
    import yaml

    data = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    data["variants"][variant]["train"] = {**data["variants"][variant].get("train", {}), **train}
    path.write_text(yaml.safe_dump(data))
    return path
