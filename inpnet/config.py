"""Typed, frozen view of ``params.yaml``.

``params.yaml`` is parsed once, at an entry point (the CLI or a pipeline flow), into
:class:`Params`. Every section is a frozen pydantic model that forbids unknown keys, so a
typo such as ``train.lr_warmup`` fails with its dotted path and the keys that are allowed
there instead of being silently ignored. Components never receive the whole ``Params``:
entry points hand each one its own section.

Variants (``inpnet_s``, ``mae_s``, ...) are named entries under ``variants`` that pick a
model family and override the family's model defaults and the shared ``train`` defaults.
:meth:`Params.variant` resolves one into a :class:`ResolvedVariant`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inpnet.errors import ConfigError

__all__ = [
    "DataConfig",
    "EvalConfig",
    "MasksConfig",
    "Params",
    "RegistryConfig",
    "ResolvedVariant",
    "TrainConfig",
    "load_params",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- data


class RemoteFile(_Section):
    """One downloadable file: where it lives and how to recognise a complete copy."""

    url: str
    filename: str
    size: int | None = Field(default=None, ge=0, description="expected size in bytes, if known")
    md5: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


def _places_file(name: str, md5: str, size: int | None = None) -> RemoteFile:
    return RemoteFile(url=f"http://data.csail.mit.edu/places/places365/{name}", filename=name, md5=md5, size=size)


class FetchConfig(_Section):
    """Official Places365 downloads (URLs and checksums as published by the dataset)."""

    train: RemoteFile = _places_file("train_large_places365standard.tar", "67e186b496a84c929568076ed01a8aa1")
    val: RemoteFile = _places_file("val_large.tar", "9b71c4993ad89d2d8bcbdc4aef38042f")
    filelist: RemoteFile = _places_file("filelist_places365-standard.tar", "35a0585fee1fa656440f3ab298f8479c")
    retries: int = Field(default=5, ge=0)
    backoff_s: float = Field(default=2.0, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    chunk_bytes: int = Field(default=1 << 20, gt=0)
    url_base: str | None = Field(
        default=None, description="mirror: replaces everything before each file name in the URLs"
    )


class SampleConfig(_Section):
    """The embedded offline sample, built from photographs that the dependencies ship.

    Each category's photographs are in one split only (``inpnet.data.sample``): train and
    val never share a photograph.
    """

    train_per_category: int = Field(default=24, ge=1)  # crops per train category (8 categories)
    val_per_category: int = Field(default=12, ge=1)  # crops per val category (3 categories)
    shortest_side: int = Field(default=160, ge=32, le=1024)
    jpeg_quality: int = Field(default=90, ge=50, le=100)
    seed: int = 0


class ShardConfig(_Section):
    """Streaming a Places365 tar into WebDataset shards."""

    resize: int | None = Field(
        default=None, ge=16, description="re-encode with this shortest side; None keeps the JPEG bytes"
    )
    samples_per_shard: int = Field(default=1000, ge=1)
    shard_multiple: int = Field(
        default=4, ge=1, description="shard count is rounded to a multiple of this (ranks x workers)"
    )
    workers: int = Field(default=2, ge=1)
    task_runner: Literal["threads", "processes", "dask"] = "threads"
    jpeg_quality: int = Field(default=95, ge=1, le=100, description="JPEG quality when --resize re-encodes")
    verify: Literal["structure", "decode"] = Field(
        default="structure",
        description="structure: marker/segment/end-of-image check at ~1 GB/s; decode: adds a strict 1/8-scale decode (~60 MB/s per worker)",
    )
    retries: int = Field(default=2, ge=0, description="Prefect retries of a failed shard task")
    max_pixels: int = Field(
        default=50_000_000,
        ge=1,
        description="refuse images whose header claims more pixels (a 600-byte JPEG can claim 60000x60000)",
    )
    resume_check: Literal["quick", "sha256"] = Field(
        default="quick",
        description="how a re-run trusts a finished shard: quick = size, mtime and the last 64 KiB; sha256 = the whole file",
    )


class DataConfig(_Section):
    source: Literal["sample", "places365"] = "sample"
    raw_dir: str = "data/raw"
    shards_dir: str = "data/shards"
    # what the source looked like at the start of the run (stage `remote`, a dep of `data`)
    remote_state: str = "data/remote.json"
    fetch: FetchConfig = FetchConfig()
    sample: SampleConfig = SampleConfig()
    shard: ShardConfig = ShardConfig()


# ---------------------------------------------------------------------------- masks

MaskPattern = Literal["random", "center", "corners", "edges", "free_form", "external"]
# the classical methods of inpnet.evaluate.baselines.BASELINES (a test checks they agree)
Baseline = Literal["flat", "harmonic", "telea", "navier_stokes", "biharmonic"]


class MasksConfig(_Section):
    """The fixed, seeded evaluation mask bank."""

    out_dir: str = "data/masks"
    size: int = Field(default=128, ge=8)
    patterns: tuple[MaskPattern, ...] = ("random", "center", "corners", "edges", "free_form")
    ratios: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)
    per_cell: int = Field(default=4, ge=1)
    seed: int = 0
    external_dir: str | None = Field(
        default=None, description="folder of mask PNGs (e.g. NVIDIA irregular masks) for pattern 'external'"
    )
    external_invert: bool = Field(default=False, description="the external masks use white = known")
    random_patch_size: int = Field(default=16, ge=1, description="grid cell of the 'random' pattern, in pixels")

    @model_validator(mode="after")
    def _check_ratios(self) -> MasksConfig:
        bad = [r for r in self.ratios if not 0.0 <= r <= 0.9]
        if bad:
            raise ValueError(f"ratios must lie in [0, 0.9], got {bad}")
        if len({f"{r:.2f}" for r in self.ratios}) != len(self.ratios):
            raise ValueError(f"ratios {list(self.ratios)} collide when written as %.2f folder names")
        if "external" in self.patterns and not self.external_dir:
            raise ValueError("pattern 'external' needs masks.external_dir (a folder of mask PNGs)")
        return self


# ---------------------------------------------------------------------------- models


class InpNetModelConfig(_Section):
    family: Literal["inpnet"] = "inpnet"
    img_size: int = Field(default=128, ge=16)
    patch_size: int = Field(default=16, ge=2)
    embed_dim: int = Field(default=384, ge=8)
    depth: int = Field(default=6, ge=1)
    num_heads: int = Field(default=6, ge=1)
    mlp_ratio: float = Field(default=4.0, gt=0)
    skip_connections: bool = True
    skip_depths: tuple[int, ...] | None = Field(
        default=None, description="encoder blocks feeding the decoder; None = 1/4, 1/2, 3/4, last"
    )
    decoder_channels: tuple[int, ...] = Field(
        default=(96, 48, 24, 12),
        min_length=1,
        description="one decoder stage per entry, each upsampling 2x (the first makes up the rest of patch_size)",
    )
    drop_path: float = Field(default=0.0, ge=0, lt=1)
    prefill: Literal["none", "pushpull", "harmonic", "telea"] = Field(
        default="none", description="hole pre-filled by a cheap fill as input; the network predicts a correction to it"
    )
    patch_view: bool = Field(
        default=False,
        description="ablation: the input mask grown to whole patches (MAE's view: a patch with a hole pixel is "
        "hidden whole); the loss and the composite keep the true mask",
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> InpNetModelConfig:
        if self.embed_dim % self.num_heads or self.embed_dim % 4:
            raise ValueError(
                f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads} and by 4 (sin-cos)"
            )
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        stages = 2 ** (len(self.decoder_channels) - 1)
        if self.patch_size % stages:
            raise ValueError(
                f"patch_size {self.patch_size} must be a multiple of 2**(len(decoder_channels)-1) = {stages}; "
                f"use fewer decoder_channels (got {list(self.decoder_channels)})"
            )
        bad = [d for d in self.skip_depths or () if not 1 <= d <= self.depth]
        if bad:
            raise ValueError(f"skip_depths {bad} outside 1..depth ({self.depth}); they count encoder blocks from 1")
        return self


class MAEModelConfig(_Section):
    family: Literal["mae"] = "mae"
    img_size: int = Field(default=128, ge=16)
    patch_size: int = Field(default=16, ge=2)
    embed_dim: int = Field(default=384, ge=8)
    depth: int = Field(default=6, ge=1)
    num_heads: int = Field(default=6, ge=1)
    decoder_embed_dim: int = Field(default=256, ge=8)
    decoder_depth: int = Field(default=2, ge=1)
    decoder_num_heads: int = Field(default=8, ge=1)
    mlp_ratio: float = Field(default=4.0, gt=0)
    norm_pix_loss: bool = Field(default=False, description="loss in each target patch's normalised coordinates")
    pretrained: str | None = Field(default=None, description="local path to an MAE checkpoint (encoder-only or full)")

    @model_validator(mode="after")
    def _check_shapes(self) -> MAEModelConfig:
        for dim, heads, name in (
            (self.embed_dim, self.num_heads, ""),
            (self.decoder_embed_dim, self.decoder_num_heads, "decoder_"),
        ):
            if dim % heads or dim % 4:
                raise ValueError(
                    f"{name}embed_dim {dim} must be divisible by {name}num_heads {heads} and by 4 (sin-cos)"
                )
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")
        return self


class CMGANModelConfig(_Section):
    family: Literal["cmgan"] = "cmgan"
    img_size: int = Field(default=128, ge=16)
    base_channels: int = Field(default=32, ge=4)
    max_channels: int = Field(default=256, ge=4)
    num_ffc_blocks: int = Field(default=2, ge=0)
    style_dim: int = Field(default=256, ge=8)
    mapping_layers: int = Field(default=2, ge=1)
    mask_attention: bool = Field(
        default=True, description="mask-aware attention at resolutions <= attn_max_res (ablation switch)"
    )
    attn_max_res: int = Field(default=16, ge=1, description="highest feature resolution that gets an attention block")
    attn_heads: int = Field(default=4, ge=1)
    ffc_stride: int = Field(default=8, ge=1, description="FFC residual blocks run at img_size / ffc_stride (LaMa: 8)")
    eval_latent: Literal["w_avg", "seeded_z"] = Field(
        default="w_avg",
        description="w outside training: the tracked average w (truncation psi = 0) or mapping(z) of one z drawn from eval_seed",
    )
    eval_seed: int = Field(default=0, description="seed of the evaluation z when eval_latent is seeded_z")


ModelConfig = Annotated[InpNetModelConfig | MAEModelConfig | CMGANModelConfig, Field(discriminator="family")]


# ----------------------------------------------------------------------------- train


class DiscConfig(_Section):
    """The discriminator of an adversarial variant."""

    kind: Literal["patchgan", "stylegan2"] = "patchgan"
    channels: int = Field(default=64, ge=4, description="channels at full resolution (doubled per halving)")


class LossConfig(_Section):
    hole_weight: float = Field(default=1.0, ge=0, description="MSE/L1 on hole pixels")
    valid_weight: float = Field(default=0.1, ge=0, description="MSE/L1 on known pixels (whole-image reconstruction)")
    adv_weight: float = Field(default=0.0, ge=0, description="adversarial term; > 0 turns the adversarial step on")
    adv_loss: Literal["nonsaturating", "hinge", "wgan_gp"] = "nonsaturating"
    r1_gamma: float = Field(default=0.0, ge=0)
    r1_every: int = Field(default=16, ge=1, description="lazy R1: penalty every N discriminator steps")
    gp_weight: float = Field(default=10.0, ge=0)
    perceptual_weight: float = Field(
        default=0.0,
        ge=0,
        description="VGG-19 feature loss (inpnet.models.vgg); > 0 with no weights file: the run says so, the term is off",
    )
    perceptual_weights_path: str | None = Field(
        default=None, description="local VGG-19 weights (.safetensors, or torchvision's .pth read weights_only)"
    )
    perceptual_weights_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{8,64}$",
        description="sha256 of that file: the full 64 hex digits, or a prefix of 8+ (torch hub's file-name form)",
    )
    disc: DiscConfig = DiscConfig()
    rec_loss: Literal["mse", "l1"] | None = Field(
        default=None, description="reconstruction kind; None = family default (cmgan: l1, else mse)"
    )
    r1_masked: bool | None = Field(
        default=None,
        description="R1 penalises only the gradient on hole pixels; None = family default (cmgan: true, else false)",
    )

    @model_validator(mode="after")
    def _check_perceptual(self) -> LossConfig:
        if self.perceptual_weights_path and not self.perceptual_weight:
            raise ValueError(
                f"loss.perceptual_weights_path {self.perceptual_weights_path!r} is set but loss.perceptual_weight "
                "is 0, so the file would not be used; set a weight or drop the path"
            )
        if self.perceptual_weights_path and not self.perceptual_weights_sha256:
            raise ValueError(
                f"loss.perceptual_weights_path {self.perceptual_weights_path!r} needs loss.perceptual_weights_sha256 "
                "(the file's sha256, e.g. from `sha256sum`); weights are never loaded unverified"
            )
        if self.perceptual_weights_sha256 and not self.perceptual_weights_path:
            raise ValueError("loss.perceptual_weights_sha256 is set without loss.perceptual_weights_path")
        return self


class TrainMasksConfig(_Section):
    """Training-time masks: a mixture of patterns with a ratio ramp (mask warm-up)."""

    patterns: dict[str, float] = Field(
        default_factory=lambda: {"random": 1.0, "center": 1.0, "corners": 1.0, "edges": 1.0, "free_form": 1.0}
    )
    min_ratio: float = Field(default=0.0, ge=0, le=0.9)
    max_ratio: float = Field(default=0.75, ge=0, le=0.9)
    warmup_steps: int = Field(default=0, ge=0, description="max ratio ramps up linearly over these steps")
    dynamic: bool = Field(
        default=True, description="False: one fixed pattern/ratio per image for the whole run (ablation)"
    )
    object_dir: str | None = Field(
        default=None,
        description="folder of <key>.png panoptic/instance maps (+ <key>.json); used by object_aware variants",
    )
    object_aware: bool = Field(
        default=False,
        description="CM-GAN's object-aware masks from object_dir (inpnet.masks.objects); without the folder the "
        "run says so and draws from the pattern mixture",
    )
    random_patch_size: int = Field(
        default=16, ge=1, description="grid cell of the 'random' pattern (match the model's patch size)"
    )
    object_prob: float = Field(
        default=0.5, ge=0, le=1, description="share of holes shaped like objects (rest: strokes and boxes)"
    )
    object_overlap: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="an image's object with more than this share of its area in the hole is removed from the hole",
    )
    object_max_area: float = Field(
        default=0.5, gt=0, le=1, description="segments larger than this share of the image count as background"
    )


BUDGET_KEYS = ("budget_images", "budget_flops")
STEP_KEYS = ("max_steps", *BUDGET_KEYS)  # exactly one says how long a run trains


class TrainConfig(_Section):
    out_dir: str = "models"
    image_size: int = Field(default=128, ge=16)
    batch_size: int = Field(default=16, ge=1)
    max_steps: int | None = Field(
        default=200, ge=1, description="optimiser steps (the schedule's length); null with a budget below"
    )
    budget_images: int | None = Field(
        default=None,
        ge=1,
        description="train on this many images instead: max_steps = ceil(budget / global batch); excludes max_steps",
    )
    budget_flops: float | None = Field(
        default=None,
        gt=0,
        description="train for this many FLOPs instead: max_steps = ceil(budget / (training FLOPs per image x "
        "global batch)), the FLOPs measured by inpnet.train.cost; excludes max_steps",
    )
    lr: float = Field(default=3e-4, gt=0)
    lr_scaling: Literal["none", "linear"] = Field(
        default="none",
        description="none: lr is the peak lr; linear: MAE's rule, peak = lr x global batch / 256 with lr the base "
        "lr and global batch = batch_size x processes x grad_accum (disc_lr stays absolute)",
    )
    disc_lr: float = Field(default=2e-4, gt=0)
    weight_decay: float | None = Field(
        default=None,
        ge=0,
        description="AdamW's decoupled decay; None = family default (inpnet, mae: 0.05; cmgan: 0, it trains with Adam)",
    )
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = Field(default=20, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
    grad_accum: int = Field(default=1, ge=1)
    ema_decay: float | None = Field(default=None, gt=0, lt=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    num_workers: int = Field(default=0, ge=0)
    seed: int = 0
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int = Field(default=100, ge=1)
    sample_every: int = Field(default=100, ge=1)
    val_every: int = Field(
        default=100, ge=0, description="score the fixed val subset every N steps and at the end; 0 = off"
    )
    val_images: int = Field(
        default=16, ge=1, description="size of that subset (first val images, each with a bank mask)"
    )
    loss: LossConfig = LossConfig()
    masks: TrainMasksConfig = TrainMasksConfig()
    # DDP under the pipeline: more than one process makes the train stage launch torchrun
    nproc_per_node: int = Field(default=1, ge=1, description="processes per machine (GPUs per node)")
    nnodes: int = Field(default=1, ge=1, description="machines; above 1 the rendezvous settings apply")
    rdzv_backend: str = "c10d"
    rdzv_endpoint: str | None = Field(default=None, description="host:port of the rendezvous (nnodes > 1)")
    rdzv_id: str = "inpnet"

    @model_validator(mode="before")
    @classmethod
    def _budget_replaces_default_steps(cls, data: Any) -> Any:
        # a budget given without max_steps replaces the default step count instead of clashing with it
        if isinstance(data, dict) and "max_steps" not in data and any(data.get(k) is not None for k in BUDGET_KEYS):
            return {**data, "max_steps": None}
        return data

    @model_validator(mode="after")
    def _check_length(self) -> TrainConfig:
        given = [k for k in STEP_KEYS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one of {', '.join(STEP_KEYS)} (how long to train), got "
                f"{', '.join(f'{k}={getattr(self, k)}' for k in given) or 'none'}; "
                "a budget replaces max_steps: set max_steps to null beside it"
            )
        return self

    @model_validator(mode="after")
    def _check_rendezvous(self) -> TrainConfig:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"train.nnodes={self.nnodes} needs train.rdzv_endpoint (host:port of the rendezvous)")
        return self


class VariantConfig(_Section):
    """A named variant: a model family with overrides of its defaults and of ``train``."""

    family: Literal["inpnet", "mae", "cmgan"]
    description: str = ""
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


class ResolvedVariant(_Section):
    name: str
    model: ModelConfig
    train: TrainConfig

    @model_validator(mode="after")
    def _check_recipe(self) -> ResolvedVariant:
        if self.model.family == "cmgan" and self.train.weight_decay:
            raise ConfigError(
                f"variants.{self.name}.train.weight_decay: {self.train.weight_decay} with family cmgan; CM-GAN "
                "trains with Adam and no weight decay (decoupled decay ignores the mapping network's 0.01 "
                "learning-rate multiplier and shrinks w); leave it unset or 0"
            )
        return self

    def check_sizes(self) -> ResolvedVariant:
        """Raise :class:`ConfigError` unless ``model.img_size`` equals ``train.image_size``: the
        trainer feeds ``train.image_size`` crops to a model built for ``model.img_size``."""
        if self.model.img_size != self.train.image_size:
            raise ConfigError(
                f"variants.{self.name}: model.img_size {self.model.img_size} and train.image_size "
                f"{self.train.image_size} must agree (the model trains on train.image_size crops); set both"
            )
        return self


# ---------------------------------------------------------------------- eval, registry


class EvalConfig(_Section):
    """Evaluation protocol: image size, baselines, FID weights, workers, report options."""

    out_dir: str = "reports"
    batch_size: int = Field(default=16, ge=1)
    image_size: int = Field(
        default=128, ge=16, description="size for plain image folders; with the mask bank its size wins"
    )
    baselines: tuple[Baseline, ...] = ("flat", "harmonic", "telea", "navier_stokes", "biharmonic")
    inpaint_radius: int = Field(default=3, ge=1, description="OpenCV Telea / Navier-Stokes neighbourhood radius (px)")
    workers: int = Field(default=2, ge=1, description="CPU processes for the classical baselines")
    mask_size_mismatch: Literal["resize", "refuse"] = Field(
        default="resize", description="a mask whose size differs from the image: resize (nearest) or refuse the pair"
    )
    fid_weights: str | None = Field(default=None, description="local path to pt_inception-2015-12-05 weights")
    kid_subset_size: int = Field(default=50, ge=2)
    grid_images: int = Field(
        default=4, ge=1, description="examples per row in grid.png: each pattern's worst and best pairs by PSNR"
    )
    seed: int = Field(default=0, description="seeds the permutation that assigns external masks to images")


class PromotionGates(_Section):
    primary_metric: Literal["psnr", "ssim"] = "psnr"
    min_improvement: float = Field(
        default=0.0, ge=0, description="challenger must beat the champion by this much on the primary metric"
    )
    max_pattern_psnr_drop: float = Field(default=0.5, ge=0, description="no pattern may lose more PSNR (dB) than this")
    reference: Baseline | None = Field(
        default="telea",
        description="classical method every version is judged against, first versions included; None = no absolute gate",
    )
    max_gap_to_reference_db: float = Field(
        default=1.0, ge=0, description="no pattern's PSNR may trail the reference's (same bank) by more than this (dB)"
    )


class RegistryConfig(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "inpnet"
    model_names: dict[str, str] = Field(
        default_factory=lambda: {"inpnet": "inpnet", "mae": "inpnet-mae", "cmgan": "inpnet-cmgan"}
    )
    gates: PromotionGates = PromotionGates()
    # register also exports each variant to ONNX (inpnet.export.export_variant_onnx) and logs
    # model.onnx + export.json under onnx/ of its logged model
    export_onnx: bool = False


def resolve_tracking_uri(registry: RegistryConfig, explicit: str | None = None) -> str:
    """The MLflow URI an entry point uses: an explicit flag, else ``$MLFLOW_TRACKING_URI``,
    else ``registry.tracking_uri``. Entry points call this; library code takes the result."""
    import os

    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or registry.tracking_uri


class ScheduleConfig(_Section):
    cron: str = "0 3 * * 0"
    timezone: str = "UTC"
    dvc_remote: str | None = None
    # where `dvc exp push` sends the retraining experiment (only with dvc_remote set)
    git_remote: str = "origin"


# ------------------------------------------------------------------------------- root

_FAMILY_MODELS: dict[str, type[BaseModel]] = {
    "inpnet": InpNetModelConfig,
    "mae": MAEModelConfig,
    "cmgan": CMGANModelConfig,
}


class PipelineConfig(_Section):
    variants: tuple[str, ...] = ()


class Params(_Section):
    data: DataConfig = DataConfig()
    pipeline: PipelineConfig = PipelineConfig()
    masks: MasksConfig = MasksConfig()
    train: TrainConfig = TrainConfig()
    variants: dict[str, VariantConfig] = Field(default_factory=dict)
    evaluate: EvalConfig = EvalConfig()
    registry: RegistryConfig = RegistryConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="after")
    def _check_variants(self) -> Params:
        for name in self.variants:
            self.variant(name)  # raises ConfigError with the variant's path on a bad override
        for name in self.pipeline.variants:  # the ones `dvc repro` trains must be trainable as configured
            if name in self.variants:
                self.check_shard_size(name)
                size = self.variant(name).check_sizes().model.img_size
                if size != self.masks.size:  # the evaluate stage would refuse it, after training it
                    raise ConfigError(
                        f"variants.{name}: model.img_size {size} but masks.size {self.masks.size}: the pipeline "
                        "scores every variant in pipeline.variants on the mask bank at its size; make them agree"
                    )
        missing = [v for v in self.pipeline.variants if v not in self.variants]
        if missing:
            raise ValueError(f"pipeline.variants names undefined variants {missing}; defined: {sorted(self.variants)}")
        return self

    def shard_size(self) -> tuple[str, int] | None:
        """(key, px): the shortest side of the images the shard stage writes, and the key that sets it
        (``data.shard.resize``, else ``data.sample.shortest_side`` for the sample); None when the
        shards keep Places365's original JPEGs (sizes not known from the params)."""
        if self.data.shard.resize is not None:
            return "data.shard.resize", self.data.shard.resize
        if self.data.source == "sample":
            return "data.sample.shortest_side", self.data.sample.shortest_side
        return None

    def check_shard_size(self, name: str) -> None:
        """Raise :class:`ConfigError` when variant ``name`` crops larger than the shards' images:
        every crop would be upsampled (a 512 px variant on 256 px shards: 2-4x), and the model
        would learn blur, not detail. Checked for ``pipeline.variants`` on load and by the train
        stage for the variant it trains."""
        shards = self.shard_size()
        size = self.variant(name).train.image_size
        if shards is not None and size > shards[1]:
            key, side = shards
            raise ConfigError(
                f"variants.{name}.train.image_size {size} exceeds {key} {side}: the shards hold images {side} px "
                f"on their shortest side, so every {size} px crop would be upsampled; write shards at {size} px or "
                f"more ({key}: {size}, or data.shard.resize: null to keep Places365's 512 px originals) or "
                f"train a variant of at most {side} px"
            )

    def variant(self, name: str) -> ResolvedVariant:
        """Resolve variant ``name``: family defaults and ``train`` with its overrides applied."""
        if name not in self.variants:
            raise ConfigError(f"unknown variant {name!r}; params.yaml defines: {sorted(self.variants)}")
        v = self.variants[name]
        model_cls = _FAMILY_MODELS[v.family]
        model = _validate(model_cls, {**v.model, "family": v.family}, f"variants.{name}.model")
        train_dict = _deep_merge(self.train.model_dump(), v.train)
        if any(k in v.train for k in STEP_KEYS):  # the variant's run length replaces the inherited one
            train_dict.update({k: v.train.get(k) for k in STEP_KEYS})
        train = _validate(TrainConfig, train_dict, f"variants.{name}.train")
        return _validate(ResolvedVariant, {"name": name, "model": model, "train": train})


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            # dict-valued settings such as masks.patterns are replaced whole, not merged,
            # so a variant can drop a pattern; nested sections are merged key by key.
            out[key] = value if _is_leaf_dict(out[key]) else _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _is_leaf_dict(d: dict[str, Any]) -> bool:
    return all(not isinstance(v, dict) for v in d.values()) and all(isinstance(v, (int, float)) for v in d.values())


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the sub-model that ``loc`` (minus its last element) points into."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None:
            # dict[str, Model]: the part is a user key, the value type stays the model
            continue
        if part not in fields:
            return None
        annotation = fields[part].annotation
        current = _unwrap_model(annotation)
        if current is None:
            return None
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields is not None else None


def _unwrap_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _format_errors(err: ValidationError, model: type[BaseModel], prefix: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc)
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"unknown key {path!r}{hint}")
        elif isinstance(e.get("ctx", {}).get("error"), ConfigError):
            lines.append(str(e["ctx"]["error"]))  # already carries its own dotted path
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{path or '<root>'}: {e['msg']}{shown}")
    return "; ".join(lines)


_Model = TypeVar("_Model", bound=BaseModel)


def _validate(model: type[_Model], data: Any, prefix: str = "") -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, model, prefix)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice.

    Plain YAML loading keeps the last value silently, so a section written twice in
    ``params.yaml`` would replace the first without a word.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue  # '<<' merges may be overridden on purpose; complex keys are rare
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r} on line {line} (first on line {seen[key]}); write each key once"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_params(data: dict[str, Any] | None) -> Params:
    """Validate an already-loaded params mapping."""
    return _validate(Params, data or {})


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; errors name the file and the dotted key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root or pass --params)")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if data is None or data == {}:
        sections = ", ".join(Params.model_fields)
        raise ConfigError(
            f"{path}: params file is empty; it needs the sections {sections} (see the repository's params.yaml)"
        )
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return parse_params(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
