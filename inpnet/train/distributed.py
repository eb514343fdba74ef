"""Process-group setup for ``torchrun`` and the one place that decides rank-zero side effects.

``torchrun`` exports ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them the run is a
single process and nothing here touches ``torch.distributed``. The backend is NCCL when the
process drives a CUDA device and gloo on CPU. Logging to MLflow, writing checkpoints and the
progress bar happen only where :attr:`DistInfo.is_main` is true.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from inpnet.errors import InpnetError

log = logging.getLogger(__name__)

__all__ = [
    "DistInfo",
    "all_gather_objects",
    "all_reduce_grads",
    "all_reduce_mean",
    "any_rank",
    "destroy",
    "init_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the one process that logs, tracks and writes checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InpnetError(f"environment variable {name}={value!r} must be an integer (set by torchrun)") from None


def init_distributed(device: str | None = None, *, timeout_s: float = 1800.0) -> DistInfo:
    """Read rank and world size from the torchrun environment and join the process group.

    Args:
        device: "cpu", "cuda" or None (CUDA when available). Each rank takes GPU ``LOCAL_RANK``.
        timeout_s: collective timeout; long enough for a checkpoint write on rank 0.
    """
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise InpnetError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InpnetError("device 'cuda' requested but no CUDA device is visible")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device(kind)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=timeout_s)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
        log.info("joined process group: rank %d of %d, backend %s, device %s", rank, world, backend, dev)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def destroy(info: DistInfo) -> None:
    """Leave the process group (no-op for a single process)."""
    if info.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``values`` over ranks (returned unchanged for a single process)."""
    if not info.is_distributed:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` is true on any rank, so that every rank stops at the same step."""
    if not info.is_distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` for a single process)."""
    if not info.is_distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_grads(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average gradients over ranks in one flat collective.

    Used for modules that are not wrapped in DDP (the discriminator: its R1 / gradient
    penalty needs double backward, which DDP's reducer does not support).
    """
    if not info.is_distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # (total_numel,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n
