"""CI check: the README's quickstart figures are the ones this run produced.

The README embeds ``reports/compare/summary.md`` (written by the ``compare`` stage) between
``<!-- summary:start -->`` and ``<!-- summary:end -->``, once per CPU kind measured (each copy
begins with its ``Machine:`` line: CPU model, bf16 support, training precision). This compares
every number in the tables of the run's summary with the README's copy for the same machine,
cell by cell (for a cell that leads with a number, such as a paired difference with its
interval, that number): any cell that differs by more than ``--tolerance`` fails the check.
On a machine the README has no copy for, the differences to its first copy are printed and
the check passes, since oneDNN's kernels differ between CPU kinds.

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
            if line.strip() and not line.startswith("Machine:"):
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
    blocks = [part.split(END, 1)[0] for part in text.split(START)[1:] if END in part]
    if not blocks:
        print(f"{args.readme}: no {START} ... {END} section", file=sys.stderr)
        return 1
    run_machine, produced = cells(args.summary.read_text())
    copies = [cells(block) for block in blocks]
    readme_machine, stated = next(((m, c) for m, c in copies if m == run_machine), copies[0])
    print(f"README copies: {', '.join(m or 'no Machine: line' for m, _ in copies)}")
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
            f"copy {args.summary} into the README's summary section for {run_machine!r}",
            file=sys.stderr,
        )
        return 1
    if problems:
        print("(a CPU kind the README has no figures for: differences are reported, not failed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
