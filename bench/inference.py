"""Benchmark: inference milliseconds per image for each family, fp32 and bf16, against Telea.

    uv run python bench/inference.py [--sizes 256 512] [--variants inpnet_s mae_s cmgan_s]
                                     [--device cpu|cuda] [--reps 5]

For each variant the model is built at the benchmark size (its ``img_size`` set to 256 or
512, random weights: speed does not depend on training) and run through the same path as
``inpnet inpaint`` (:class:`inpnet.inpaint.Inpainter` + composite + 8-bit output) on photo
crops with free-form holes of ratio 0.3. Also measured: the tiled path with the variant's
own 128 px grid, and OpenCV Telea on the same image and mask (the peer). bf16 casts the
weights to bfloat16.

On CPU the figure that counts is process CPU time with ``--threads 1`` (default): it does
not change when other jobs share the cores, whereas wall time does, and with several
threads an oversubscribed machine inflates CPU time too (OpenMP threads spin while their
partner waits for a core). ``2-core est`` is that figure halved (ideal scaling: a lower
bound on 2-thread wall time). Goal: the s variants at 256 px within 100 ms on 2 CPU cores,
and within 10 ms per request on an H100 (``--device cuda``: wall time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

GOAL_MS = {"cpu": 100.0, "cuda": 10.0}


def photo(size: int, seed: int) -> np.ndarray:
    """(size, size, 3) uint8 crop of a scikit-image photograph."""
    from PIL import Image, ImageOps
    from skimage import data

    src = [data.astronaut(), data.coffee(), data.chelsea()][seed % 3]
    return np.asarray(ImageOps.fit(Image.fromarray(src), (size, size), Image.Resampling.BICUBIC))


def hole(size: int, seed: int) -> np.ndarray:
    from inpnet.masks import make_mask

    return make_mask("free_form", size, size, 0.3, np.random.default_rng(seed))


def timed(fn: Callable[[], object], reps: int, device: str) -> tuple[float, float]:
    """Median (wall, process CPU) milliseconds of ``fn`` after one warm-up call.

    CPU time (all threads) does not grow when other jobs share the cores; wall time does.
    """
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def telea(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2

    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return cv2.inpaint(bgr, mask.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)


def build(variant, size: int | None, dtype: torch.dtype, device: str):
    from inpnet.inpaint import Inpainter
    from inpnet.models.build import build_model

    cfg = variant.model if size is None else variant.model.model_copy(update={"img_size": size})
    torch.manual_seed(0)  # bench only: weights are random, speed does not depend on them
    model = build_model(cfg).to(device=device, dtype=dtype).eval()
    return Inpainter(model, grid=cfg.img_size, family=cfg.family)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--variants", nargs="+", default=["inpnet_s", "mae_s", "cmgan_s"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = load-independent CPU time)")
    parser.add_argument("--params", type=Path, default=Path(__file__).resolve().parents[1] / "params.yaml")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured

    from inpnet.config import load_params
    from inpnet.inpaint import inpaint_image

    params = load_params(args.params)
    torch.set_num_threads(args.threads)
    goal = GOAL_MS.get(args.device.split(":")[0], float("nan"))
    print(
        f"device {args.device}, torch threads {torch.get_num_threads()}, reps {args.reps}, goal {goal:g} ms at 256 px"
    )
    print(
        f"{'variant':<10} {'size':>5} {'path':<12} {'dtype':<5} {'wall ms':>9} {'cpu ms':>9} "
        f"{'2-core est':>10} {'telea cpu':>9} {'x telea':>8}  note"
    )
    for size in args.sizes:
        image, mask = photo(size, 0), hole(size, 0)
        _, t_telea = timed(lambda: telea(image, mask), args.reps, "cpu")  # noqa: B023 - timed() calls it at once
        for name in args.variants:
            try:
                variant = params.variant(name)
            except Exception as err:  # noqa: BLE001 - a family not in this checkout's params
                print(f"{name:<10} {size:>5} skipped: {err}")
                continue
            for path, grid in (("native", size), (f"tiled@{variant.model.img_size}", None)):
                for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                    try:
                        inp = build(variant, grid, dtype, args.device)
                        ms, cpu = timed(
                            lambda: inpaint_image(inp, image, mask, device=args.device),  # noqa: B023 - called at once
                            args.reps,
                            args.device,
                        )
                    except Exception as err:  # noqa: BLE001 - e.g. an op without a bf16 kernel on this device
                        print(
                            f"{name:<10} {size:>5} {path:<12} {label:<5} {'n/a':>9} {'':>9} {'':>10} {t_telea:>9.1f} {'':>8}  "
                            f"{type(err).__name__}: {str(err)[:60]}"
                        )
                        continue
                    on_cpu = args.device == "cpu"
                    est = cpu / 2 if on_cpu else ms  # total CPU work spread over 2 cores, ideally
                    note = ""
                    if size == 256 and path == "native":
                        note = f"goal {'met' if est <= goal else 'missed'}"
                    ratio = cpu / t_telea if on_cpu else ms / t_telea
                    print(
                        f"{name:<10} {size:>5} {path:<12} {label:<5} {ms:>9.1f} {cpu:>9.1f} {est:>10.1f} {t_telea:>9.1f} {ratio:>8.1f}  {note}"
                    )


if __name__ == "__main__":
    main()
