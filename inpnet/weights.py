"""Known pretrained weights (FID Inception, MAE encoders, VGG-19, LPIPS backbones) and how to fetch them.

Every entry names its official URL, the file name the consumers expect and the checksum
its publisher gives: torch-hub style names carry a sha256 prefix (``-6726825d.pth``), the
MAE README lists md5 prefixes. :func:`fetch_weights` downloads through
:func:`inpnet.data.fetch.download`, so it resumes, retries and never leaves an unverified
file under the final name. Nothing here loads weights; consumers take a local path
(``evaluate.fid_weights``, ``variants.<name>.model.pretrained``) or, for LPIPS backbones,
find them in torch hub's cache (``$TORCH_HOME/hub/checkpoints``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from inpnet.data.fetch import download
from inpnet.errors import DownloadError

__all__ = ["WEIGHTS", "WeightsSpec", "fetch_weights"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsSpec:
    """One downloadable weights file; ``urls[0]`` is the official one, the rest are mirrors."""

    name: str
    filename: str
    urls: tuple[str, ...]
    use: str  # where the project (or a library it uses) expects the file
    sha256: str | None = None
    sha256_prefix: str | None = None
    md5_prefix: str | None = None
    size: int | None = None

    @property
    def checksum(self) -> str:
        """The checksum as shown to users: ``sha256:6726825d...``, or ``unverified``."""
        for alg, value, full in (
            ("sha256", self.sha256, True),
            ("sha256", self.sha256_prefix, False),
            ("md5", self.md5_prefix, False),
        ):
            if value:
                return f"{alg}:{value}{'' if full else '...'}"
        return "unverified"


_MAE = "https://dl.fbaipublicfiles.com/mae/pretrain"
_TORCHVISION = "https://download.pytorch.org/models"
_FIDELITY = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0"

WEIGHTS: dict[str, WeightsSpec] = {
    spec.name: spec
    for spec in (
        WeightsSpec(
            name="fid_inception",
            filename="pt_inception-2015-12-05-6726825d.pth",
            # torch-fidelity re-publishes the same converted TF weights (same sha256 prefix)
            urls=(
                "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
                f"{_FIDELITY}/weights-inception-2015-12-05-6726825d.pth",
            ),
            sha256_prefix="6726825d",
            use="evaluate.fid_weights (FID InceptionV3, TF 2015-12-05 weights as pytorch-fid/torch-fidelity use them)",
        ),
        WeightsSpec(
            name="mae_vit_base",
            filename="mae_pretrain_vit_base.pth",
            urls=(f"{_MAE}/mae_pretrain_vit_base.pth",),
            md5_prefix="8cad7c",
            use="variants.<mae variant>.model.pretrained (MAE ViT-B/16 encoder, ImageNet-1k)",
        ),
        WeightsSpec(
            name="mae_vit_large",
            filename="mae_pretrain_vit_large.pth",
            urls=(f"{_MAE}/mae_pretrain_vit_large.pth",),
            md5_prefix="b8b06e",
            use="variants.<mae variant>.model.pretrained (MAE ViT-L/16 encoder, ImageNet-1k)",
        ),
        WeightsSpec(
            name="mae_vit_huge",
            filename="mae_pretrain_vit_huge.pth",
            urls=(f"{_MAE}/mae_pretrain_vit_huge.pth",),
            md5_prefix="9bdbb0",
            use="variants.<mae variant>.model.pretrained (MAE ViT-H/14 encoder, ImageNet-1k)",
        ),
        WeightsSpec(
            name="vgg19",
            filename="vgg19-dcbb9e9d.pth",
            urls=(f"{_TORCHVISION}/vgg19-dcbb9e9d.pth",),
            sha256_prefix="dcbb9e9d",
            use="loss.perceptual_weights_path (VGG-19 features of the perceptual loss, torchvision ImageNet weights; "
            "loss.perceptual_weights_sha256: dcbb9e9d)",
        ),
        WeightsSpec(
            name="lpips_vgg16",
            filename="vgg16-397923af.pth",
            urls=(f"{_TORCHVISION}/vgg16-397923af.pth",),
            sha256_prefix="397923af",
            use="LPIPS(vgg) backbone: torchvision VGG16, looked up in $TORCH_HOME/hub/checkpoints",
        ),
        WeightsSpec(
            name="lpips_alexnet",
            filename="alexnet-owt-7be5be79.pth",
            urls=(f"{_TORCHVISION}/alexnet-owt-7be5be79.pth",),
            sha256_prefix="7be5be79",
            use="LPIPS(alex) backbone: torchvision AlexNet, looked up in $TORCH_HOME/hub/checkpoints",
        ),
        WeightsSpec(
            name="lpips_vgg16_fidelity",
            filename="weights-vgg16-lpips.pth",
            urls=(f"{_FIDELITY}/weights-vgg16-lpips.pth",),
            use="torch-fidelity's LPIPS (VGG16 + linear heads), looked up in $TORCH_HOME/hub/checkpoints; "
            "no published checksum",
        ),
    )
}


def fetch_weights(
    name: str,
    dest_dir: str | Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    retries: int = 5,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the known weights ``name`` into ``dest_dir`` (verified); returns the file's path.

    Args:
        name: a key of :data:`WEIGHTS`.
        dest_dir: folder to hold the file under its expected name.
        url: a different source (a mirror or a local server) instead of the table's URLs.
        sha256: full hex digest that replaces the table's checksum (for a re-published file).
        retries, backoff_s, timeout_s, progress: passed to :func:`download`.

    Raises:
        DownloadError: unknown name, or no source delivered a file that verifies.
    """
    spec = WEIGHTS.get(name)
    if spec is None:
        raise DownloadError(
            f"unknown weights {name!r}; known: {', '.join(sorted(WEIGHTS))} (see `inpnet weights list`)"
        )
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)):
        raise DownloadError(f"--sha256 {sha256!r} is not 64 hex digits; pass the full sha256 of the file")
    checks = (
        dict(sha256=sha256)
        if sha256
        else dict(sha256=spec.sha256, sha256_prefix=spec.sha256_prefix, md5_prefix=spec.md5_prefix, size=spec.size)
    )
    if not any(checks.values()):
        log.warning("%s has no published checksum; the download is checked for completeness only", name)
    dest = Path(dest_dir) / spec.filename
    errors = []
    for source in (url,) if url else spec.urls:
        try:
            return download(
                source, dest, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s, progress=progress, **checks
            )
        except DownloadError as err:
            if dest.is_file():  # present but not verifying: another mirror will not fix that
                raise
            log.warning("%s: %s", name, err)
            errors.append(str(err))
    if len(errors) == 1:
        raise DownloadError(errors[0])
    raise DownloadError(f"{name}: every source failed: " + " | ".join(errors))
