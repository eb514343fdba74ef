"""The torchrun command line the train stage builds from ``train.nproc_per_node``, ``nnodes``
and the rendezvous settings, and the check that several nodes name a rendezvous."""

from __future__ import annotations

import sys

import pytest

from inpnet.config import TrainConfig
from inpnet.stages.train import torchrun_command, world_size

ENTRY = ["-m", "pipelines.train", "--variant", "v", "--rank"]


def test_one_node_is_standalone() -> None:
    cfg = TrainConfig(nproc_per_node=2)
    assert world_size(cfg) == 2
    assert torchrun_command(cfg, ENTRY) == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--standalone",
        *ENTRY,
    ]


def test_several_nodes_use_the_rendezvous() -> None:
    cfg = TrainConfig(nproc_per_node=8, nnodes=4, rdzv_endpoint="head:29400", rdzv_id="job7")
    assert world_size(cfg) == 32
    cmd = torchrun_command(cfg, ENTRY)
    assert "--standalone" not in cmd and cmd[-len(ENTRY) :] == ENTRY
    assert {"--nnodes=4", "--rdzv-backend=c10d", "--rdzv-endpoint=head:29400", "--rdzv-id=job7"} <= set(cmd)


def test_several_nodes_without_an_endpoint_are_refused() -> None:
    with pytest.raises(ValueError, match=r"train.nnodes=2 needs train.rdzv_endpoint"):
        TrainConfig(nnodes=2)
