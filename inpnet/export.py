"""Export a model to ONNX or TorchScript as one graph: (image, mask) -> composited output.

The exported graph takes ``image`` (B, 3, H, W) float32 in [0, 1] and ``mask`` (B, 1, H, W)
float32 of 0 and 1 (1 = hole) and returns ``output`` (B, 3, H, W): the model's prediction,
clamped to [0, 1], merged with the known pixels by the shared
:func:`inpnet.models.composite.composite` (a ``Where``), so known pixels come back exactly and
a consumer needs nothing else. ``export.json`` beside the file records the family, variant,
size, dynamic axes, opset, library versions, the weights' SHA-256, the input/output contract
and the parity measured at export.

Choices, and why:

* **ONNX through the dynamo-based exporter** (``torch.onnx.export(..., dynamo=True)``).
  CM-GAN's fast Fourier convolutions (:mod:`inpnet.models.ffc`) call ``rfft2``/``irfft2``;
  the legacy TorchScript-based exporter has no ONNX symbolic for them (the known blocker of
  LaMa's export), the dynamo exporter lowers them to ONNX's ``DFT`` operator (opset 17+). That keeps one implementation
  of the FFC (an exact real-DFT rewrite as matrix products would be a second one to keep in
  sync, and costs O(N^2) per axis), and on the tiny CM-GAN it matches PyTorch to about 1e-6.
* **TorchScript by tracing** (``torch.jit.trace``): the models call timm blocks and Python
  control flow that ``torch.jit.script`` cannot compile. A trace records one path, so every
  export is checked against eager PyTorch on inputs it was not traced on.
* **Spatial size fixed per export.** Position tables (InP-Net, MAE) are resampled to the
  export size and CM-GAN runs at its ``img_size`` only, so H and W are part of the graph (a
  dynamic-H/W export of InP-Net was tried: its graph fails at any other size);
  ``--size H W`` picks them (multiples of the patch size; CM-GAN: its ``img_size``).
  ``dynamic=True`` makes the batch axis dynamic, for InP-Net and MAE in ONNX: CM-GAN's
  modulated convolutions group by batch (ONNX's ``Conv`` needs a constant group count) and a
  TorchScript trace fixes it. A fixed-batch export (batch 1) is run in chunks by
  :class:`ExportedModel`.
* **CM-GAN's latent** is its evaluation latent (``eval_latent``: ``w_avg`` or the mapping of
  the seeded z), so the graph is deterministic.
* **Pre-fill** ``pushpull`` and ``harmonic`` are pure torch and go into the graph; ``telea``
  calls OpenCV on uint8 arrays and is refused. The harmonic fill's red-black sweeps unroll
  into thousands of nodes, on which the exporter's optimiser spends time quadratic in the
  graph (over 10 minutes at 32 px); such a graph gets constant folding only (:func:`_optimize`),
  and inpnet_s_harmonic exports in under a minute on one core.

:func:`export_module` exports an in-memory model, :func:`export_variant_onnx` is the call for
the registry to carry the ONNX file as an artifact of a version; :func:`export_model` loads a
model first; :func:`load_exported` makes an exported file an :class:`inpnet.inpaint.Inpainter`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from inpnet.errors import CheckpointError, ConfigError, InpnetError, OutputError, ShapeError
from inpnet.models.composite import composite
from inpnet.outputs import writing_output

if TYPE_CHECKING:
    from inpnet.config import ResolvedVariant

__all__ = [
    "FORMATS",
    "META_FILE",
    "MODEL_FILES",
    "OPSET",
    "Composited",
    "ExportError",
    "export_model",
    "export_module",
    "export_variant_onnx",
    "load_exported",
    "load_model_or_export",
]
EXPORTED_SUFFIXES = (".onnx", ".pt")

log = logging.getLogger(__name__)

Format = Literal["onnx", "torchscript"]
FORMATS: tuple[Format, ...] = ("onnx", "torchscript")
MODEL_FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.pt"}
META_FILE = "export.json"
OPSET = 18  # DFT (CM-GAN's FFTs) needs >= 17; 18 is the dynamo exporter's default
TOLERANCE = 1e-4  # max abs difference to eager PyTorch accepted at export
# the largest graph (nodes after constant folding) given the exporter's whole optimiser: MAE and
# CM-GAN s have 700 and 1,200; the harmonic pre-fill's unrolled sweeps 9,000 (see _optimize)
OPTIMIZE_MAX_NODES = 4000
INPUT_NAMES = ("image", "mask")
OUTPUT_NAME = "output"


class ExportError(InpnetError):
    """A model cannot be exported, or the exported graph disagrees with PyTorch."""


class Composited(nn.Module):
    """``model`` with the clamp and the composite inside: (image, mask) -> composited output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        prediction = self.model(image, mask).float().clamp(0.0, 1.0)  # (B, 3, H, W)
        return composite(image, mask, prediction)


# ------------------------------------------------------------------------- checks


def _check_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: unknown export format; expected one of {', '.join(FORMATS)}")
    return fmt


def _check_exportable(model: nn.Module, family: str, variant: str) -> None:
    prefill = getattr(model, "prefill", "none")
    if prefill == "telea":
        raise ExportError(
            f"variant {variant!r} uses prefill 'telea', which runs OpenCV's cv2.inpaint on uint8 arrays "
            "outside torch and cannot be part of an exported graph; export a variant with prefill "
            "'pushpull', 'harmonic' or 'none'"
        )
    if family == "mae" and not getattr(model, "_masked_attention", True):
        raise ExportError(
            f"variant {variant!r}: the installed timm blocks take no attention mask, so MAE runs each image "
            "separately and cannot be traced; upgrade timm"
        )


def _check_size(
    model: nn.Module, family: str, variant: str, img_size: int, size: tuple[int, int] | None
) -> tuple[int, int]:
    height, width = size if size is not None else (img_size, img_size)
    if height <= 0 or width <= 0:
        raise ShapeError(f"--size {height} {width}: both sides must be positive")
    if family == "cmgan":
        if (height, width) != (img_size, img_size):
            raise ShapeError(
                f"--size {height} {width}: variant {variant!r} (cmgan) runs at {img_size}x{img_size} only; "
                f"export with --size {img_size} {img_size}"
            )
        return height, width
    patch = int(getattr(model, "patch_size", 1))
    if height % patch or width % patch:
        raise ShapeError(
            f"--size {height} {width}: variant {variant!r} ({family}) needs sides that are multiples of its "
            f"patch size {patch} (e.g. {max(patch, height // patch * patch)} {max(patch, width // patch * patch)})"
        )
    return height, width


# ------------------------------------------------------------------------- export


def _example(batch: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random image and mask: a box of random size per image and sparse specks.

    The boxes differ, so the number of fully known patches (MAE's visible tokens) differs
    between images and between the traced example and the parity check: a graph that baked
    it in fails the check.
    """
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 3, height, width, generator=gen)  # (B, 3, H, W)
    mask = (torch.rand(batch, 1, height, width, generator=gen) > 0.995).float()  # (B, 1, H, W)
    for i in range(batch):
        box_h, box_w = (int(v) for v in torch.randint(1, max(2, height // 2), (2,), generator=gen))
        mask[i, :, height // 4 : height // 4 + box_h, width // 4 : width // 4 + box_w] = 1.0
    return image, mask


def _export_onnx(wrapper: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path, dynamic: bool) -> str:
    """Export to ``path``; returns what :func:`_optimize` did to the graph."""
    import onnx

    dynamic_shapes = None
    if dynamic:
        batch = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = {"image": {0: batch}, "mask": {0: batch}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on axis names and decompositions
            program = torch.onnx.export(
                wrapper,
                example,
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                dynamic_shapes=dynamic_shapes,
                verbose=False,
                optimize=False,  # its rewrite pass is quadratic in the graph's size: see _optimize
            )
            assert program is not None  # dynamo=True returns the ONNXProgram
            optimized = _optimize(program)
    except Exception as err:
        raise ExportError(f"ONNX export failed: {type(err).__name__}: {str(err).splitlines()[0]}") from err
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    return optimized


def _optimize(program: Any) -> str:
    """Fold constants and drop dead nodes of the exported graph; then, for a graph of at most
    :data:`OPTIMIZE_MAX_NODES` nodes, run the exporter's whole optimiser, in place.

    The whole optimiser (``optimize=True``) adds onnxscript's pattern rewriter and fusions,
    which made MAE's graph about twice as fast in onnxruntime; but its matching grows with the
    square of the graph: on the harmonic pre-fill's unrolled sweeps (9,000 nodes after folding
    at 128 px) it ran for over 10 minutes. Such a graph keeps the folding (seconds) and
    onnxruntime's own optimisations at load. Returns which of the two it got (for export.json).
    """
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(program.model)
    onnxscript.optimizer.remove_unused_nodes(program.model)
    nodes = len(program.model.graph)
    if nodes <= OPTIMIZE_MAX_NODES:
        program.optimize()
        return "onnxscript optimizer"
    log.info(
        "ONNX graph of %d nodes (over %d): constants folded, onnxscript's rewriter skipped",
        nodes,
        OPTIMIZE_MAX_NODES,
    )
    return f"constant folding only ({nodes} nodes, over {OPTIMIZE_MAX_NODES})"


def _export_torchscript(wrapper: nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit's deprecation notice and TracerWarnings of shape checks
        traced = torch.jit.trace(wrapper, example, check_trace=False)  # type: ignore[no-untyped-call]  # torch.jit is untyped
        torch.jit.save(traced, str(path))


def _runner(fmt: Format, path: Path) -> Any:
    """A callable (image, mask) -> output (torch tensors) running the exported file."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            feeds = {"image": image.float().cpu().numpy(), "mask": mask.float().cpu().numpy()}
            return torch.from_numpy(session.run([OUTPUT_NAME], feeds)[0])

        return run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]  # torch.jit is untyped

    def run_ts(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = module(image.float().cpu(), mask.float().cpu())
        return out

    return run_ts


def _parity(wrapper: nn.Module, fmt: Format, path: Path, batch: int, height: int, width: int) -> float:
    """Max abs difference to eager PyTorch on inputs the graph was not traced on."""
    image, mask = _example(batch, height, width, seed=1)
    with torch.no_grad():
        expected = wrapper(image, mask)
    try:
        got = _runner(fmt, path)(image, mask)
    except Exception as err:
        raise ExportError(f"the exported {fmt} graph does not run on fresh inputs: {str(err).splitlines()[0]}") from err
    return float((got - expected).abs().max())


def export_module(
    model: nn.Module,
    out: str | Path,
    *,
    fmt: str,
    family: str,
    variant: str,
    img_size: int,
    size: tuple[int, int] | None = None,
    dynamic: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Export ``model`` (``forward(image, mask) -> prediction``) into the folder ``out``.

    Args:
        fmt: ``onnx`` or ``torchscript``.
        family, variant: recorded in ``export.json``; ``family`` picks the size rules.
        img_size: the model's ``img_size`` (its config's).
        size: (H, W) of the graph; default ``img_size`` square.
        dynamic: a dynamic batch axis (default: batch 1).
        extra: more plain values for ``export.json`` (e.g. the source).

    Returns:
        The exported file (``model.onnx`` or ``model.pt``); ``export.json`` lies beside it.

    Raises:
        ConfigError: unknown format. ShapeError: a size the family cannot take.
        ExportError: a part that cannot be exported (telea pre-fill), or a graph that
        disagrees with PyTorch by more than 1e-4.
        OutputError: ``out`` is a file.
    """
    fmt_ = _check_format(fmt)
    if dynamic and fmt_ == "torchscript":
        raise ConfigError(
            "--dynamic: a TorchScript export is a trace at one batch size (CM-GAN's modulated convolutions "
            "group by batch), so its batch is fixed; use --format onnx for a dynamic batch"
        )
    if dynamic and family == "cmgan":
        raise ConfigError(
            f"--dynamic: variant {variant!r} (cmgan) cannot have a dynamic batch: its modulated convolutions "
            "group by batch, and ONNX's Conv takes the group count as a constant; export without --dynamic"
        )
    _check_exportable(model, family, variant)
    height, width = _check_size(model, family, variant, img_size, size)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: a file of that name exists; --out must be a folder")
    model = model.float().eval()
    wrapper = Composited(model).eval()
    example = _example(2 if dynamic else 1, height, width, seed=0)  # torch.export specialises a size-1 axis
    with writing_output(out, "cannot create the export folder"):
        out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".inpnet-export-", dir=out))
    try:
        file = staging / MODEL_FILES[fmt_]
        if fmt_ == "onnx":
            extra = {**(extra or {}), "onnx_optimization": _export_onnx(wrapper, example, file, dynamic)}
        else:
            _export_torchscript(wrapper, example, file)
        diff = _parity(wrapper, fmt_, file, 3 if dynamic else 1, height, width)
        if not diff <= TOLERANCE:
            raise ExportError(
                f"the exported {fmt_} graph of {variant!r} differs from PyTorch by {diff:.3g} (max abs) "
                f"on fresh inputs, over the tolerance {TOLERANCE}; not written"
            )
        meta = _meta(model, fmt_, family, variant, (height, width), dynamic, diff, extra or {})
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        with writing_output(out):
            for name in (MODEL_FILES[fmt_], META_FILE):
                (staging / name).replace(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s (%s) to %s: %dx%d, parity %.2g", variant, fmt_, out / MODEL_FILES[fmt_], height, width, diff)
    return out / MODEL_FILES[fmt_]


def _meta(
    model: nn.Module,
    fmt: Format,
    family: str,
    variant: str,
    size: tuple[int, int],
    dynamic: bool,
    diff: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    from inpnet.train.checkpoint import weights_sha256

    height, width = size
    batch: int | str = "batch" if dynamic else 1
    versions: dict[str, str] = {"torch": str(torch.__version__)}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        versions |= {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    latent = {}
    if family == "cmgan":
        latent = {
            "latent": f"eval_latent {getattr(model, 'eval_latent', '?')} (seed {getattr(model, 'eval_seed', '?')})"
        }
    return {
        **extra,
        **latent,
        "format": fmt,
        "file": MODEL_FILES[fmt],
        "family": family,
        "variant": variant,
        "size": [height, width],
        "dynamic_axes": {"image": {"0": "batch"}, "mask": {"0": "batch"}, OUTPUT_NAME: {"0": "batch"}}
        if dynamic
        else {},
        "opset": OPSET if fmt == "onnx" else None,
        "versions": versions,
        "weights_sha256": weights_sha256(model),
        "parity_max_abs": diff,
        "inputs": {
            "image": {"shape": [batch, 3, height, width], "dtype": "float32", "range": [0.0, 1.0]},
            "mask": {"shape": [batch, 1, height, width], "dtype": "float32", "values": "0 or 1, 1 = hole"},
        },
        "outputs": {
            OUTPUT_NAME: {
                "shape": [batch, 3, height, width],
                "dtype": "float32",
                "range": [0.0, 1.0],
                "contract": "composited: known pixels (mask 0) equal the image exactly, holes from the model",
            }
        },
    }


def export_model(
    model: str | Path,
    out: str | Path,
    *,
    fmt: str,
    size: tuple[int, int] | None = None,
    dynamic: bool = False,
    tracking_uri: str | None = None,
) -> Path:
    """Load ``model`` (a checkpoint folder, a pulled folder or ``models:/NAME@ALIAS``) and export it.

    See :func:`export_module` for the arguments and errors.
    """
    from inpnet.inpaint import load_inpainter

    fmt_ = _check_format(fmt)  # before the (slow) load
    inpainter, info = load_inpainter(model, tracking_uri=tracking_uri)
    extra = {"source": info["source"], "name": info.get("name"), "version": info.get("version")}
    return export_module(
        inpainter.model,
        out,
        fmt=fmt_,
        family=info["family"],
        variant=info["variant"],
        img_size=int(info["img_size"]),
        size=size,
        dynamic=dynamic,
        extra=extra,
    )


def export_variant_onnx(model: nn.Module, variant: ResolvedVariant, out: str | Path) -> Path:
    """``model.onnx`` + ``export.json`` of ``variant``'s model in ``out``, for the registry to log beside a version.

    At the variant's ``img_size``, with a dynamic batch where the family allows it (not CM-GAN).
    A model with the ``telea`` pre-fill raises :class:`ExportError`: the caller decides whether
    a version without an ONNX file is acceptable.
    """
    family = variant.model.family
    return export_module(
        model,
        out,
        fmt="onnx",
        family=family,
        variant=variant.name,
        img_size=variant.model.img_size,
        dynamic=family != "cmgan",
        extra={"source": variant.name},
    )


# -------------------------------------------------------------------------- loading


class ExportedModel(nn.Module):
    """An exported file as a model: ``forward(image, mask) -> output``; a fixed batch is run in chunks."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        super().__init__()
        self.path, self.meta = path, meta
        self.batch = None if meta["dynamic_axes"] else int(meta["inputs"]["image"]["shape"][0])
        self.size = tuple(meta["size"])
        self._run = _runner(meta["format"], path)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[-2:]) != self.size:
            raise ShapeError(
                f"{self.path}: exported for {self.size[0]}x{self.size[1]} inputs, got {image.shape[-2]}x{image.shape[-1]}"
            )
        step = self.batch or image.shape[0]
        outs = [
            self._run(image[i : i + step], mask[i : i + step]).to(image.device) for i in range(0, image.shape[0], step)
        ]
        return torch.cat(outs)


def load_exported(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """An :class:`inpnet.inpaint.Inpainter` (any image size, by tiling) and an info dict for an exported file.

    ``path`` is ``model.onnx`` or ``model.pt`` with ``export.json`` beside it. The export must
    be square (the inpainter tiles on a square grid).
    """
    from inpnet.inpaint import Inpainter

    path = Path(path)
    meta_path = path.parent / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: exported model file not found")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{meta_path}: no readable export description beside {path.name} ({err})") from None
    if meta.get("file") != path.name:
        raise CheckpointError(f"{meta_path}: describes {meta.get('file')!r}, not {path.name!r}")
    height, width = meta["size"]
    if height != width:
        raise ShapeError(
            f"{path}: exported at {height}x{width}; inference tiles on a square grid, export with --size N N"
        )
    inpainter = Inpainter(ExportedModel(path, meta), grid=height, family=meta["family"]).eval()
    info = {
        "family": meta["family"],
        "variant": meta["variant"],
        "img_size": height,
        "source": str(path),
        "name": meta.get("name"),
        "version": meta.get("version"),
        "format": meta["format"],
    }
    return inpainter, info


def load_model_or_export(
    model: str | Path, *, device: str = "cpu", tracking_uri: str | None = None, onnx: bool = False
) -> tuple[Any, dict[str, Any]]:
    """:func:`load_exported` for an exported file, else :func:`inpnet.inpaint.load_inpainter`.

    An exported file is a ``.onnx``/``.pt`` file or a folder with ``export.json`` (e.g. from
    ``inpnet pull --onnx``). With ``onnx``, ``model`` is a registered version
    (``models:/NAME@ALIAS``) or a pulled model folder, and what runs is the ONNX export the
    version carries (``onnx/model.onnx``, logged by ``registry.export_onnx``), not its weights.
    Exported graphs run on the CPU (onnxruntime's CPU provider, TorchScript on CPU); the
    inpainter moves tiles there and back.

    Raises:
        RegistryError: ``onnx`` and the version or folder carries no ONNX export.
    """
    from inpnet.inpaint import load_inpainter

    text = str(model)
    if onnx:
        return _load_carried_onnx(text, tracking_uri=tracking_uri)
    path = Path(text)
    if path.suffix in EXPORTED_SUFFIXES and not text.startswith("models:/"):
        return load_exported(path)
    if not text.startswith("models:/") and (path / META_FILE).is_file():
        return load_exported(path / _exported_file(path / META_FILE))
    return load_inpainter(model, device=device, tracking_uri=tracking_uri)


def _exported_file(meta_path: Path) -> str:
    try:
        return str(json.loads(meta_path.read_text())["file"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{meta_path}: not a readable export description with a 'file' ({err})") from None


def _load_carried_onnx(model: str, *, tracking_uri: str | None) -> tuple[Any, dict[str, Any]]:
    """The ONNX export a registered version (or a folder pulled from one) carries, loaded."""
    from inpnet.errors import RegistryError
    from inpnet.registry.lineage import ONNX_DIR

    if model.startswith("models:/"):
        from inpnet.registry.pull import onnx_path
        from inpnet.registry.store import download_model

        onnx_path(model, tracking_uri=tracking_uri)  # a clear error for a version without one
        with tempfile.TemporaryDirectory(prefix="inpnet-onnx-") as tmp:
            local, mv = download_model(model, Path(tmp) / "onnx", tracking_uri=tracking_uri, path=ONNX_DIR)
            # onnxruntime reads the whole file into its session: the download can go
            inpainter, info = load_exported(local / MODEL_FILES["onnx"])
        return inpainter, {**info, "source": model, "name": mv.name, "version": str(mv.version)}
    folder = Path(model)
    for candidate in (folder / ONNX_DIR / MODEL_FILES["onnx"], folder / MODEL_FILES["onnx"]):
        if candidate.is_file():
            inpainter, info = load_exported(candidate)
            registry = folder / "registry.json"
            pulled = json.loads(registry.read_text()) if registry.is_file() else {}
            return inpainter, {**info, "name": pulled.get("name"), "version": pulled.get("version")}
    raise RegistryError(
        f"{model}: --onnx needs models:/NAME@ALIAS or a pulled model folder with {ONNX_DIR}/{MODEL_FILES['onnx']}, "
        "and this one has none (the version was registered without registry.export_onnx)"
    )
