"""Training throughput per variant, and InP-Net against a plain timm ViT with the same encoder.

Each variant is measured in its own subprocess (so the peak memory is its own): a full
optimiser step of the shared trainer (forward, loss, backward, clipping, AdamW) on a fixed
batch, after warm-up steps. The peer is a plain timm ViT with InP-Net's encoder settings and
a linear pixel head, trained by the same step object, so the ratio isolates InP-Net's skip
connections and CNN decoder (goal: InP-Net step time <= 1.3x the ViT's).

On a GPU it also reports bf16 images/s and model FLOPs utilisation (FLOPs counted by
torch.utils.flop_counter for one forward+backward, against a measured bf16 matmul peak).

    uv run python bench/train.py                       # inpnet_s, mae_s, cmgan_s on this machine
    uv run python bench/train.py --variants inpnet_b mae_b --batch-size 128   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PlainViT:
    """Factory for the peer: timm ViT encoder + linear patch-pixel head, same call contract."""

    @staticmethod
    def build(cfg: Any) -> Any:
        import torch
        from timm.models.vision_transformer import VisionTransformer
        from torch import nn

        from inpnet.models.composite import masked_input

        class _ViTReconstructor(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.p = cfg.patch_size
                self.encoder = VisionTransformer(
                    img_size=cfg.img_size,
                    patch_size=cfg.patch_size,
                    in_chans=4,
                    embed_dim=cfg.embed_dim,
                    depth=cfg.depth,
                    num_heads=cfg.num_heads,
                    mlp_ratio=cfg.mlp_ratio,
                    num_classes=0,
                    global_pool="",
                    class_token=False,
                )
                self.head = nn.Linear(cfg.embed_dim, 3 * cfg.patch_size**2)

            def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                b, _, h, w = image.shape
                tokens = self.encoder.forward_features(torch.cat([masked_input(image, mask), mask], 1))  # (B, N, D)
                pix = self.head(tokens)  # (B, N, 3*p*p)
                gh, gw = h // self.p, w // self.p
                pix = pix.view(b, gh, gw, 3, self.p, self.p).permute(0, 3, 1, 4, 2, 5)  # (B, 3, gh, p, gw, p)
                return torch.sigmoid(pix.reshape(b, 3, h, w))

        return _ViTReconstructor()


def measure(
    name: str,
    *,
    steps: int,
    warmup: int,
    batch_size: int | None,
    precision: str,
    device: str,
    peer: bool,
    image_size: int | None = None,
) -> dict[str, Any]:
    """One variant (or its ViT peer) in this process: images/s, ms/step, peak memory, FLOPs."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from inpnet.config import ResolvedVariant, load_params
    from inpnet.masks import MaskMixture
    from inpnet.train.distributed import DistInfo
    from inpnet.train.optim import Precision, resolve_precision
    from inpnet.train.steps import ReconstructionStep, Updater, generator_optimiser
    from inpnet.train.trainer import build_components

    v = load_params(REPO / "params.yaml").variant(name)
    size = image_size or v.train.image_size
    train_cfg = v.train.model_copy(
        update={
            "precision": precision,
            "compile": False,
            "batch_size": batch_size or v.train.batch_size,
            "image_size": size,
        }
    )
    model_cfg = type(v.model).model_validate({**v.model.model_dump(), "img_size": size})  # re-validated at the new size
    v = ResolvedVariant(name=v.name, model=model_cfg, train=train_cfg)
    dev = torch.device(device)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=dev)
    if not peer:
        parts = build_components(v, info)
        step_fn, model = parts.step, parts.model
    else:
        from inpnet.losses import build_loss

        model = PlainViT.build(v.model).to(dev)
        prec: Precision = resolve_precision(precision, dev)
        opt, _ = generator_optimiser(v, model)
        upd = Updater(list(model.parameters()), opt, scaler=prec.scaler(), grad_clip=v.train.grad_clip)
        step_fn = ReconstructionStep(model, build_loss(v.model, v.train.loss), upd, prec)
    b, s = v.train.batch_size, v.train.image_size
    g = torch.Generator().manual_seed(0)
    image = torch.rand(b, 3, s, s, generator=g).to(dev)
    masks = MaskMixture(v.train.masks.model_copy(update={"warmup_steps": 0}), seed=0)
    mask = masks.sample(b, s, s, step=0, generator=np.random.default_rng(0)).to(dev)
    for i in range(warmup):
        step_fn([(image, mask)], i)
    with FlopCounterMode(display=False) as counter:
        step_fn([(image, mask)], warmup)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(steps):
        step_fn([(image, mask)], warmup + 1 + i)
    _sync(dev)
    dt = (time.perf_counter() - t0) / steps
    peak = (
        torch.cuda.max_memory_allocated(dev)
        if dev.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "variant": name + (" (timm ViT peer)" if peer else ""),
        "family": v.model.family,
        "batch": b,
        "size": s,
        "precision": resolve_precision(precision, dev).name,
        "ms_per_step": dt * 1e3,
        "images_per_s": b / dt,
        "peak_mem_mb": peak / 2**20,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflop_per_image": counter.get_total_flops() / b / 1e9,
        "threads": torch.get_num_threads(),
    }


def matmul_peak_tflops(device: str, n: int = 8192, iters: int = 20) -> float:
    """Measured dense bf16 matmul throughput (the MFU denominator)."""
    import torch

    dev = torch.device(device)
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    bm = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ bm
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ bm
    _sync(dev)
    return 2 * n**3 * iters / (time.perf_counter() - t0) / 1e12


def _run_child(name: str, args: argparse.Namespace, peer: bool) -> dict[str, Any] | None:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        name,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--precision",
        args.precision,
        "--device",
        args.device,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.image_size:
        cmd += ["--image-size", str(args.image_size)]
    if peer:
        cmd.append("--peer")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode != 0:
        print(f"  {name}{' peer' if peer else ''}: failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="+", default=["inpnet_s", "mae_s", "cmgan_s"])
    ap.add_argument("--steps", type=int, default=5, help="timed optimiser steps per variant")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="default: the variant's train.batch_size")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--image-size", type=int, default=None, help="train at this size (default: the variant's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(
            json.dumps(
                measure(
                    args.one,
                    steps=args.steps,
                    warmup=args.warmup,
                    batch_size=args.batch_size,
                    precision=args.precision,
                    device=args.device,
                    peer=args.peer,
                    image_size=args.image_size,
                )
            )
        )
        return

    print(
        f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, precision {args.precision}"
    )
    peak = matmul_peak_tflops(args.device) if args.device == "cuda" else None
    if peak:
        print(f"measured bf16 matmul peak: {peak:.0f} TFLOP/s")
    rows: dict[str, dict[str, Any]] = {}
    for name in args.variants:
        for peer in [False, True] if name.startswith("inpnet") else [False]:
            r = _run_child(name, args, peer)
            if r is None:
                continue
            rows[r["variant"]] = r
            mfu = f"  MFU {100 * r['gflop_per_image'] * r['images_per_s'] / 1e3 / peak:5.1f}%" if peak else ""
            print(
                f"{r['variant']:28s} {r['precision']:>5s} b={r['batch']:<4d} {r['size']}px  "
                f"{r['images_per_s']:8.1f} img/s  {r['ms_per_step']:9.1f} ms/step  peak {r['peak_mem_mb']:8.0f} MB  "
                f"{r['params_m']:6.1f} M params  {r['gflop_per_image']:6.2f} GFLOP/img{mfu}"
            )
    for name, r in rows.items():
        peer = rows.get(f"{name} (timm ViT peer)")
        if peer:
            ratio = r["ms_per_step"] / peer["ms_per_step"]
            print(
                f"{name} step time / timm ViT step time: {ratio:.2f}x (goal <= 1.30x) -> {'ok' if ratio <= 1.3 else 'over'}"
            )
    if "inpnet_s" in rows and "mae_s" in rows:
        print(f"inpnet_s / mae_s images/s: {rows['inpnet_s']['images_per_s'] / rows['mae_s']['images_per_s']:.2f}x")


if __name__ == "__main__":
    main()
