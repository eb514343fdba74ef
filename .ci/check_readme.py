"""CI check: the README's quickstart figures are the ones this run produced.

The README embeds ``reports/compare/summary.md`` (written by the ``compare`` stage) between
``<!-- summary:start -->`` and ``<!-- summary:end -->``. This compares every number in the
tables of the two, cell by cell (for a cell that leads with a number, such as a paired
difference with its interval, that number). On the CPU kind the README names (its ``Machine:`` line),
any cell that differs by more than ``--tolerance`` fails the check; on another CPU kind the
differences are printed and the check passes, since oneDNN's kernels differ between kinds
(the README says which machine its figures come from).

Usage: python .ci/check_readme.py [README.md] [reports/compare/summary.md] [--tolerance 0.3]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

START, END = "<!-- summary:start -->", "<!-- summary:end -->"


def cells(text: str) -> tuple[str, dict[tuple[str, str, str], float]]:
    """The ``Machine:`` line and {(table heading, row, column): number} of markdown tables."""
    machine = next((line for line in text.splitlines() if line.startswith("Machine:")), "")
    out: dict[tuple[str, str, str], float] = {}
    heading, header = "", []
    for line in text.splitlines():
        if not line.startswith("|"):
            if line.strip():
                heading, header = line.strip(), []
            continue
        row = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if not header:
            header = row
            continue
        if set("".join(row)) <= set("-: "):
            continue
        for col, value in zip(header[1:], row[1:], strict=False):
            # a number, or a number that leads a cell ("+0.62 [+0.41, +0.85] ahead": the mean)
            if m := re.match(r"[+-]?\d+(\.\d+)?(?=\s|$)", value):
                out[(heading, row[0], col)] = float(m.group())
    return machine, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", nargs="?", default="README.md", type=Path)
    parser.add_argument("summary", nargs="?", default="reports/compare/summary.md", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.3, help="largest allowed difference per cell")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    if START not in text or END not in text:
        print(f"{args.readme}: no {START} ... {END} section", file=sys.stderr)
        return 1
    readme_machine, stated = cells(text.split(START, 1)[1].split(END, 1)[0])
    run_machine, produced = cells(args.summary.read_text())
    problems = [
        f"{k}: README {v} vs run {produced.get(k)}"
        for k, v in stated.items()
        if k not in produced or abs(produced[k] - v) > args.tolerance
    ]
    problems += [
        f"{k}: produced by the run ({v}) but not in the README" for k, v in produced.items() if k not in stated
    ]
    same_machine = readme_machine == run_machine
    print(f"README figures: {readme_machine or 'no Machine: line'}; this run: {run_machine}")
    print(f"{len(stated)} README cells, {len(produced)} produced, {len(problems)} beyond {args.tolerance}")
    for p in problems:
        print(f"  {p}")
    if problems and same_machine:
        print(
            "the README's quickstart figures are not what this run produced on the same CPU kind: "
            f"copy {args.summary} into the README's summary section",
            file=sys.stderr,
        )
        return 1
    if problems:
        print("(another CPU kind than the README's: differences are reported, not failed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
