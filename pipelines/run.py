"""Every DVC stage's command: ``python -m pipelines.run STAGE [ARGS]`` runs ``pipelines.STAGE``.

It is ``python -m pipelines.STAGE [ARGS]`` (which works as well), started warm: when the run's
warm runner (:mod:`pipelines.warm`) is up, the stage runs in a process forked from it, with
torch, Prefect and MLflow already imported; otherwise here, cold. The result is the same.
"""

from __future__ import annotations

import runpy
import sys

from pipelines import warm
from pipelines.common import prepare_environment

STAGES = ("remote", "data", "shard", "masks", "train", "evaluate", "compare", "register", "retrain")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in STAGES:
        print(f"usage: python -m pipelines.run {{{','.join(STAGES)}}} [ARGS...]", file=sys.stderr)
        return 2
    module, args = f"pipelines.{argv[0]}", argv[1:]
    # the defaults every stage sets first (run_entry), set before the runner compares environments:
    # the runner was started by a stage that had set them
    prepare_environment()
    code = warm.run_warm(module, args)
    if code is not None:
        return code
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
