"""Scheduled retraining: a Prefect deployment that runs the DVC pipeline as an experiment.

``python -m pipelines.retrain serve`` creates the deployment (cron and time zone from the
``schedule`` section of params.yaml, concurrency limit 1 because two ``dvc repro`` in one
workspace cannot overlap) and serves it until stopped. ``python -m pipelines.retrain run``
runs the flow once, here and now.

One run: ``dvc exp run`` (which trains, evaluates, registers and promotes, as the
``register`` stage of dvc.yaml does), then ``dvc push`` to ``schedule.dvc_remote`` when one
is configured. The DVC experiment name and the promotion summary are the flow's result.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, task

from inpnet.config import load_params
from inpnet.errors import InpnetError
from pipelines.common import base_parser, run_entry

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "scheduled-retrain"


def _dvc(args: list[str], repo: Path) -> str:
    # the dvc of this environment (a served deployment may not have the venv on PATH)
    beside = Path(sys.executable).parent / "dvc"
    cmd = [str(beside) if beside.is_file() else "dvc", *args]
    # stage commands say `python -m pipelines...`: this interpreter's bin folder comes first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path}
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-20:]
        raise InpnetError(f"`{' '.join(cmd)}` failed in {repo} (exit {proc.returncode}):\n" + "\n".join(tail))
    return proc.stdout


@task(name="dvc-exp-run")
def exp_run_task(repo: str, name: str | None, set_params: list[str], targets: list[str]) -> str:
    args = ["exp", "run"]
    if name:
        args += ["--name", name]
    for kv in set_params:
        args += ["-S", kv]
    args += targets
    out = _dvc(args, Path(repo))
    log.info("dvc exp run finished:\n%s", out[-2000:])
    return out


@task(name="dvc-push", retries=3, retry_delay_seconds=30)
def push_task(repo: str, remote: str) -> None:
    _dvc(["push", "-r", remote], Path(repo))


@flow(name="retrain", log_prints=True)
def retrain_flow(
    repo: str = ".",
    params_file: str = "params.yaml",
    exp_name: str | None = None,
    set_params: list[str] | None = None,
    targets: list[str] | None = None,
) -> dict[str, Any]:
    """Run the pipeline as a DVC experiment, push when a remote is set, report the promotion."""
    repo_path = Path(repo).resolve()
    params = load_params(repo_path / params_file)
    exp_run_task(str(repo_path), exp_name, list(set_params or []), list(targets or []))
    if params.schedule.dvc_remote:
        push_task(str(repo_path), params.schedule.dvc_remote)
    summary_path = repo_path / "reports" / "registry.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {"repo": str(repo_path), "experiment": exp_name, "registry": summary}


def make_deployment(repo: Path, params_file: Path) -> RunnerDeployment:
    """The deployment object (not yet applied): cron from params, one run at a time."""
    schedule = load_params(repo / params_file).schedule
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import RunnerDeployment

    deployment = retrain_flow.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[CronSchedule(cron=schedule.cron, timezone=schedule.timezone)],
        concurrency_limit=1,
        parameters={"repo": str(repo.resolve()), "params_file": str(params_file)},
        description="Retrain every variant on fresh data, evaluate, register and promote.",
        tags=["inpnet", "retrain"],
    )
    assert isinstance(deployment, RunnerDeployment)  # sync-compatible: called from sync code it is not a coroutine
    return deployment


def main(args: argparse.Namespace) -> None:
    repo = Path(args.repo)
    if args.action == "serve":
        from prefect import serve

        serve(make_deployment(repo, args.params), limit=1)
    else:
        result = retrain_flow(
            repo=str(repo),
            params_file=str(args.params),
            exp_name=args.name,
            set_params=args.set or [],
            targets=args.targets or [],
        )
        print(json.dumps(result, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser(__doc__)
    parser.add_argument("action", choices=["serve", "run"], help="serve the scheduled deployment, or run once now")
    parser.add_argument("--repo", default=".", help="the DVC repository to run in (default: %(default)s)")
    parser.add_argument("--name", default=None, help="DVC experiment name (run only)")
    parser.add_argument("--set", "-S", action="append", help="params override key=value, as dvc exp run -S (run only)")
    parser.add_argument("--targets", nargs="*", help="dvc.yaml stages to run (default: all)")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_entry(main, build_parser()))
