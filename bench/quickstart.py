"""The quickstart's wall time on a fresh clone, stage by stage, and the overhead around the work.

Clones the committed HEAD into a temporary folder (no outputs, no DVC cache, no MLflow or
Prefect state), runs ``dvc repro`` there with this environment's tools, and times each
stage from DVC's ``Running stage`` lines. A stage's *work* is its Prefect flow run, from
its first "Beginning flow run" to its last flow run's "Finished in state" in the log; everything else (process
start, imports, the Prefect API, DVC hashing and locking) is *overhead*.

    uv run python bench/quickstart.py                 # the whole quickstart (minutes)
    uv run python bench/quickstart.py --keep /tmp/qs  # keep the clone to inspect its reports
    uv run python bench/quickstart.py --set train.precision=fp32   # `dvc exp run -S ...` instead

Prints one row per stage and the totals against the 15-minute budget and the 60 s
overhead goal.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
BUDGET_S = 15 * 60
OVERHEAD_GOAL_S = 60.0

_STAGE = re.compile(r"Running stage '([^']+)'")
_BEGIN = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| INFO +\| Flow run .* - Beginning flow run")
_END = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| INFO +\| Flow run .* - Finished in state")


def _clock(stamp: str) -> float:
    t = datetime.strptime(stamp, "%H:%M:%S.%f")
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="clone into this (empty) folder and keep it")
    parser.add_argument("--rev", default="HEAD", help="commit to clone (default: HEAD)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run `dvc exp run -S KEY=VALUE` (repeatable) instead of `dvc repro`, e.g. train.precision=fp32",
    )
    args = parser.parse_args()

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="inpnet-quickstart-"))
    workdir.mkdir(parents=True, exist_ok=True)
    clone = workdir / "inpnet"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", args.rev], cwd=clone, check=True)
    homes = workdir / "homes"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "INPNET_PREFECT_SERVER")
    }
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "PREFECT_HOME": str(homes / "prefect"),
            "DVC_NO_ANALYTICS": "1",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )

    stages: list[dict[str, float | str]] = []  # stage name, start and work seconds
    start = time.monotonic()
    command = [str(VENV_BIN / "dvc"), "repro"]
    if args.set:
        command = [str(VENV_BIN / "dvc"), "exp", "run", *(a for kv in args.set for a in ("-S", kv))]
    proc = subprocess.Popen(
        command,
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    log = (workdir / "repro.log").open("w")
    begin: float | None = None  # the stage's first flow run began (clock seconds)
    for line in proc.stdout:
        log.write(line)
        now = time.monotonic() - start
        if m := _STAGE.search(line):
            stages.append({"stage": m.group(1), "start": now, "work": 0.0})
            print(f"[{now:7.1f} s] {m.group(1)}", flush=True)
            begin = None
        elif (m := _BEGIN.match(line)) and begin is None:
            begin = _clock(m.group(1))
        elif (m := _END.match(line)) and begin is not None and stages:
            stages[-1]["work"] = (_clock(m.group(1)) - begin) % 86400  # nested flows: the outer one ends last
    rc = proc.wait()
    total = time.monotonic() - start
    log.close()
    if rc != 0:
        print(f"{' '.join(command[1:])} exited {rc}; see {workdir / 'repro.log'}", file=sys.stderr)
        return rc

    print(f"\n{'stage':28s} {'wall s':>8s} {'work s':>8s} {'overhead s':>11s}")
    ends = [float(s["start"]) for s in stages[1:]] + [total]
    work_sum = 0.0
    for stage, end in zip(stages, ends, strict=True):
        wall = end - float(stage["start"])
        work = float(stage["work"])
        work_sum += work
        print(f"{stage['stage']!s:28s} {wall:8.1f} {work:8.1f} {wall - work:11.1f}")
    overhead = total - work_sum
    print(f"\ntotal {total:.0f} s = {total / 60:.1f} min: {total / BUDGET_S:.2f}x the 15-minute budget")
    print(f"overhead outside the stages' flows {overhead:.0f} s: {overhead / OVERHEAD_GOAL_S:.2f}x the 60 s goal")
    print(f"reports: {clone / 'reports/compare/summary.md'}" if args.keep else "")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
