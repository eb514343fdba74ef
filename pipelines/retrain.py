"""Scheduled retraining: a Prefect deployment that runs the DVC pipeline as an experiment.

``python -m pipelines.retrain serve`` creates the deployment (cron and time zone from the
``schedule`` section of params.yaml, concurrency limit 1 because two ``dvc repro`` in one
workspace cannot overlap) and serves it until stopped. ``python -m pipelines.retrain run``
runs the flow once, here and now.

One run:

1. ``dvc repro remote``: ask the data source what its files look like now (ETag,
   Last-Modified, size; ``data/remote.json``), the dep through which fresh data reaches DVC.
2. ``dvc status``: did data, code or params change since the last run? If not (and no
   ``-S`` override is given), the run says so plainly, trains nothing and makes no experiment.
3. Otherwise ``dvc exp run`` (which trains, evaluates, registers and promotes, as the
   ``register`` stage of dvc.yaml does); the stages DVC actually ran are reported.
4. With ``schedule.dvc_remote`` set: ``dvc push`` (data and models to that DVC remote)
   and ``dvc exp push`` of the new experiment to the git remote ``schedule.git_remote``.

The result names the experiment, the stages that ran and the promotion summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task

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


REMOTE_STAGE = "remote"  # always_changed in dvc.yaml: it runs every time, by design
_STAGE_RAN = re.compile(r"Running stage '([^']+)'")


@task(name="dvc-refresh-remote", retries=2, retry_delay_seconds=30)
def refresh_remote_task(repo: str) -> None:
    _dvc(["repro", REMOTE_STAGE], Path(repo))


@task(name="dvc-status")
def changed_stages_task(repo: str, targets: list[str]) -> dict[str, Any]:
    """Stages whose deps, outs, params or command changed since ``dvc.lock`` (``dvc status``).

    ``remote`` is ``always_changed``; it counts only when more than that is reported.
    """
    upstream = ["--with-deps"] if targets else []  # a target's own status ignores the stages before it
    status: dict[str, Any] = json.loads(_dvc(["status", "--json", *upstream, *targets], Path(repo)) or "{}")
    return {
        stage: changes
        for stage, changes in status.items()
        if not (stage == REMOTE_STAGE and all(c == "always changed" for c in changes))
    }


@task(name="dvc-exp-run")
def exp_run_task(repo: str, name: str, set_params: list[str], targets: list[str]) -> list[str]:
    """Run the experiment ``name``; returns the stages DVC ran (not the ones it skipped)."""
    args = ["exp", "run", "--name", name]
    for kv in set_params:
        args += ["-S", kv]
    args += targets
    out = _dvc(args, Path(repo))
    log.info("dvc exp run finished:\n%s", out[-2000:])
    return _STAGE_RAN.findall(out)


@task(name="dvc-push", retries=3, retry_delay_seconds=30)
def push_task(repo: str, remote: str) -> None:
    _dvc(["push", "-r", remote], Path(repo))


@task(name="dvc-exp-push", retries=3, retry_delay_seconds=30)
def exp_push_task(repo: str, git_remote: str, remote: str, name: str) -> None:
    _dvc(["exp", "push", "-r", remote, git_remote, name], Path(repo))


@flow(name="retrain", log_prints=True)
def retrain_flow(
    repo: str = ".",
    params_file: str = "params.yaml",
    exp_name: str | None = None,
    set_params: list[str] | None = None,
    targets: list[str] | None = None,
) -> dict[str, Any]:
    """Retrain as a DVC experiment when data, code or params changed; push when a remote is set."""
    repo_path = Path(repo).resolve()
    schedule = load_params(repo_path / params_file).schedule
    overrides, stages = list(set_params or []), list(targets or [])
    run_log = get_run_logger()  # in the flow run's log on the Prefect server, whatever the local level
    refresh_remote_task(str(repo_path))
    changed = changed_stages_task(str(repo_path), stages)
    result: dict[str, Any] = {"repo": str(repo_path), "changed": changed, "experiment": None, "stages_run": []}
    if not changed and not overrides:
        run_log.info("nothing changed (remote data, code and params are as in dvc.lock): no retrain")
        result.update(retrained=False, message="nothing changed, no retrain")
    else:
        name = exp_name or datetime.now(UTC).strftime("retrain-%Y%m%d-%H%M%S")
        run_log.info("retraining as experiment %s: %s", name, ", ".join(sorted(changed)) or f"overrides {overrides}")
        ran = exp_run_task(str(repo_path), name, overrides, stages)
        retrained = any(stage != REMOTE_STAGE for stage in ran)
        message = f"retrained: ran {', '.join(ran)}" if retrained else "nothing changed, no retrain"
        result.update(retrained=retrained, message=message, experiment=name, stages_run=ran)
    if schedule.dvc_remote:
        push_task(str(repo_path), schedule.dvc_remote)
        if result["experiment"]:
            exp_push_task(str(repo_path), schedule.git_remote, schedule.dvc_remote, result["experiment"])
    result["pushed_to"] = schedule.dvc_remote
    summary_path = repo_path / "reports" / "registry.json"
    result["registry"] = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return result


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
