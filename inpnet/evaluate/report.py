"""Evaluation reports: metrics.json, report.json, per_image.csv, table.md, plots; and the
comparison report across methods.

One evaluation folder holds:

- ``metrics.json`` (DVC metrics, numbers only)::

    {"overall": {"psnr", "ssim", "fid" (null without weights), "n", "excluded"},
     "patterns": {pattern: {"psnr", "ssim", "n"}},
     "buckets": {pattern: {ratio "%.2f": {"psnr", "ssim", "fid", "kid", "n"}}}}

- ``report.json``: method and settings, FID status and reason, skipped files, excluded
  pairs with their reasons, timings;
- ``per_image.csv``: image, pattern, ratio, achieved_ratio, mask, psnr, ssim, excluded (the
  reason a pair is left out of every mean: an empty or a full hole, an exact match);
- ``table.md``: the method's rows, plus reference rows (the baselines) when given;
- ``plots/psnr_by_ratio.png``, ``plots/ssim_by_ratio.png`` and ``grid.png``.

:func:`compare_reports` reads several such folders (a folder of report folders counts as its
children, e.g. ``reports/baselines``) and writes ``table.md``, ``psnr_by_ratio.png``,
``ssim_by_ratio.png``, ``compare.json`` and ``summary.md`` (the README's quickstart table) into
one output folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inpnet.errors import DataError
from inpnet.evaluate.plots import plot_metric_by_ratio
from inpnet.evaluate.significance import Difference, differences, read_pair_scores
from inpnet.outputs import locks_output, write_atomic, writing_output

__all__ = [
    "ReportEntry",
    "aggregate",
    "compare_reports",
    "load_report",
    "load_reports",
    "machine_description",
    "quality_warnings",
    "render_summary",
    "render_table",
    "write_report",
]

CSV_FIELDS = ("image", "pattern", "ratio", "achieved_ratio", "mask", "psnr", "ssim", "excluded")
PLOT_METRICS = ("psnr", "ssim")


@dataclass(frozen=True)
class ReportEntry:
    """One method's evaluation, as read back from its folder."""

    name: str
    metrics: dict[str, Any]
    report: dict[str, Any]
    path: Path | None = None
    reference: bool = False  # shown as a reference row (a baseline)


EXACT_MATCH = "exact match: the output equals the original image, so its PSNR is infinite"


def exclusion(row: dict[str, Any]) -> str | None:
    """Why a per-image row stays out of every mean (its ``excluded`` reason, or an exact match
    whose infinite PSNR no mean can hold), or None when it counts.

    Raises:
        DataError: a score is NaN; leaving such a pair out would flatter the method.
    """
    if row.get("excluded"):
        return str(row["excluded"])
    if row["psnr"] == math.inf:
        return EXACT_MATCH
    bad = {k: row[k] for k in PLOT_METRICS if not math.isfinite(row[k])}
    if bad:
        raise DataError(
            f"{row.get('image')} with mask {row.get('mask')}: scores {bad} are not numbers; "
            "the method's output holds NaN or infinity"
        )
    return None


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 6)


def aggregate(rows: Sequence[dict[str, Any]], fid: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per-bucket, per-pattern and overall means of per-image rows, in the metrics.json layout.

    Rows with an :func:`exclusion` (an empty or a full hole, an exact match) are left out of
    every mean and counted as ``overall.excluded``; a pattern or bucket with no counted row
    is absent.

    Args:
        rows: dicts with pattern, ratio ("%.2f"), psnr, ssim, and optionally excluded (a reason).
        fid: ``{"overall": float|None, "buckets": {(pattern, ratio): {"fid": .., "kid": ..}}}``.
    """
    fid = fid or {}
    bucket_fid = fid.get("buckets", {})
    by_bucket: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    by_pattern: dict[str, list[dict[str, Any]]] = defaultdict(list)
    counted = [row for row in rows if exclusion(row) is None]
    if not counted:
        raise DataError(
            f"no pair can be scored: all {len(rows)} are excluded ({exclusion(rows[0]) if rows else 'no pairs'})"
        )
    for row in counted:
        by_bucket[(row["pattern"], row["ratio"])].append(row)
        by_pattern[row["pattern"]].append(row)

    def stats(group: list[dict[str, Any]]) -> dict[str, Any]:
        return {"psnr": _mean([r["psnr"] for r in group]), "ssim": _mean([r["ssim"] for r in group]), "n": len(group)}

    buckets: dict[str, dict[str, Any]] = {}
    for (pattern, ratio), group in sorted(by_bucket.items()):
        extra = bucket_fid.get((pattern, ratio), {})
        buckets.setdefault(pattern, {})[ratio] = {**stats(group), "fid": extra.get("fid"), "kid": extra.get("kid")}
    overall = stats(counted)
    return {
        "overall": {
            "psnr": overall["psnr"],
            "ssim": overall["ssim"],
            "fid": fid.get("overall"),
            "n": overall["n"],
            "excluded": len(rows) - len(counted),
        },
        "patterns": {p: stats(g) for p, g in sorted(by_pattern.items())},
        "buckets": buckets,
    }


# ----------------------------------------------------------------------------- writing


def write_report(
    out_dir: Path,
    *,
    metrics: dict[str, Any],
    report: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    references: Sequence[ReportEntry] = (),
) -> None:
    """Write metrics.json, report.json, per_image.csv, table.md and plots/ into ``out_dir``.

    Raises:
        OutputError: a file cannot be written (named, with the reason); no temporary file stays.
    """
    with writing_output(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_json(out_dir / "metrics.json", metrics)
        _write_json(out_dir / "report.json", report)
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            values = {**row, "excluded": exclusion(row) or ""}
            writer.writerow(
                {k: (round(values[k], 6) if isinstance(values[k], float) else values[k]) for k in CSV_FIELDS}
            )
        write_atomic(out_dir / "per_image.csv", table.getvalue().encode())
        entries = [ReportEntry(report["method"], metrics, report, out_dir)] + [
            ReportEntry(r.name, r.metrics, r.report, r.path, reference=True) for r in references
        ]
        write_atomic(
            out_dir / "table.md", render_table(entries, title=f"Inpainting evaluation: {report['method']}").encode()
        )
        _write_plots(entries, out_dir / "plots")


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())


BY_RATIO_FIELDS = ("method", "reference", "pattern", "ratio", "psnr", "ssim", "n")


def by_ratio_rows(entries: Sequence[ReportEntry]) -> list[dict[str, Any]]:
    """One row per (method, pattern, hole-ratio bucket): the data of the by-ratio plots.

    Long form, so DVC's plots (``dvc plots diff``) can draw a line per method and revision
    from one file (``.dvc/plots/by_method.json`` colours by ``method``, dashes by revision).
    """
    rows = []
    for e in entries:
        for pattern, buckets in sorted(e.metrics.get("buckets", {}).items()):
            for ratio, cell in sorted(buckets.items(), key=lambda kv: float(kv[0])):
                rows.append(
                    {
                        "method": e.name,
                        "reference": int(e.reference),
                        "pattern": pattern,
                        "ratio": float(ratio),
                        **{m: cell.get(m) for m in PLOT_METRICS},
                        "n": cell.get("n"),
                    }
                )
    return rows


def _write_by_ratio_csv(entries: Sequence[ReportEntry], path: Path) -> None:
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=BY_RATIO_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(by_ratio_rows(entries))
    write_atomic(path, table.getvalue().encode())


def _write_plots(entries: Sequence[ReportEntry], folder: Path) -> list[Path]:
    series = {e.name: e.metrics.get("buckets", {}) for e in entries}
    refs = [e.name for e in entries if e.reference]
    return [plot_metric_by_ratio(series, m, folder / f"{m}_by_ratio.png", references=refs) for m in PLOT_METRICS]


# ----------------------------------------------------------------------------- reading


def load_report(path: str | Path, *, reference: bool = False) -> ReportEntry:
    """Read one evaluation folder (metrics.json and report.json)."""
    path = Path(path)
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        raise DataError(f"{path}: no metrics.json here; run `inpnet evaluate --out {path}` first")
    try:
        metrics = json.loads(metrics_file.read_text())
        report_file = path / "report.json"
        report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: metrics.json or report.json is not valid JSON ({err}); re-run the evaluation"
        ) from None
    return ReportEntry(report.get("method", path.name), metrics, report, path, reference)


def load_reports(paths: Iterable[str | Path]) -> list[ReportEntry]:
    """Read report folders; a folder without metrics.json contributes its report subfolders.

    Methods evaluated as baselines (``method_settings.kind == "baseline"``) are marked as
    reference rows. Duplicate method names get their folder name appended.
    """
    entries: list[ReportEntry] = []
    for p in map(Path, paths):
        if (p / "metrics.json").is_file():
            found = [p]
        else:
            found = sorted(c for c in p.glob("*") if (c / "metrics.json").is_file()) if p.is_dir() else []
            if not found:
                raise DataError(f"{p}: no metrics.json in this folder or its subfolders; run `inpnet evaluate` first")
        for folder in found:
            e = load_report(folder)
            is_ref = e.report.get("method_settings", {}).get("kind") == "baseline"
            entries.append(ReportEntry(e.name, e.metrics, e.report, e.path, is_ref))
    seen: dict[str, int] = defaultdict(int)
    for e in entries:
        seen[e.name] += 1
    return [
        ReportEntry(
            f"{e.name} ({e.path.name})" if seen[e.name] > 1 and e.path else e.name,
            e.metrics,
            e.report,
            e.path,
            e.reference,
        )
        for e in entries
    ]


# ----------------------------------------------------------------------------- tables


def _fmt(value: Any, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


_Getter = Callable[[ReportEntry], Any]  # one entry's value of a table column (None: no value)


def _pattern_value(pattern: str, metric: str) -> _Getter:
    return lambda e: e.metrics["patterns"].get(pattern, {}).get(metric)


def _row_name(e: ReportEntry) -> str:
    return f"{e.name} (reference)" if e.reference else f"**{e.name}**"


def _best(entries: Sequence[ReportEntry], get: _Getter, lower_is_better: bool = False) -> set[int]:
    values = [(i, get(e)) for i, e in enumerate(entries)]
    values = [(i, v) for i, v in values if v is not None]
    if len(values) < 2:
        return set()
    target = (min if lower_is_better else max)(v for _, v in values)
    best = {i for i, v in values if v == target}
    return best if len(best) < len(values) else set()  # all tied: nothing stands out


def _cells(entries: Sequence[ReportEntry], get: _Getter, digits: int, lower_is_better: bool = False) -> list[str]:
    best = _best(entries, get, lower_is_better)
    return [(f"**{_fmt(get(e), digits)}**" if i in best else _fmt(get(e), digits)) for i, e in enumerate(entries)]


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)  # numbers right-aligned
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def quality_warnings(
    entries: Sequence[ReportEntry], *, reference: str | None = "telea", max_gap_db: float = 1.0
) -> list[str]:
    """Plain sentences about learned models a reader must not miss: PSNR below the flat
    (mean-colour) fill in any pattern, or more than ``max_gap_db`` below ``reference``."""
    refs = {e.name: e for e in entries if e.reference}
    out: list[str] = []
    for e in entries:
        if e.reference:
            continue
        for base, gap, verdict in (
            ("flat", 0.0, "it has not learned to inpaint"),
            (reference, max_gap_db, "it would not be promoted"),
        ):
            ref = refs.get(base) if base else None
            if ref is None:
                continue
            worse = []
            for pattern, values in sorted(e.metrics.get("patterns", {}).items()):
                mine, theirs = values.get("psnr"), ref.metrics.get("patterns", {}).get(pattern, {}).get("psnr")
                if mine is not None and theirs is not None and theirs - mine > gap:
                    worse.append(f"{pattern} {mine:.2f} vs {theirs:.2f} dB")
            if worse:
                what = "below the flat mean-colour fill" if base == "flat" else f"more than {gap:g} dB below {base}"
                out.append(f"WARNING: {e.name} is {what} in {len(worse)} pattern(s) ({'; '.join(worse)}): {verdict}.")
    return out


def render_table(
    entries: Sequence[ReportEntry], *, title: str, warnings: Sequence[str] = (), diffs: Sequence[Difference] = ()
) -> str:
    """Markdown: warnings, data notes, overall, per pattern, per pattern x ratio, FID notes, skipped files.

    The best value of each column (within a pattern for the ratio tables) is bold; reference
    rows are labelled ``(reference)``; FID/KID tables appear only when some value exists.
    """
    out = [f"# {title}", ""]
    if warnings:
        out += ["## Warnings", "", *(f"- **{w}**" for w in warnings), ""]
    out += [*_notes(entries), ""]
    overall = {m: (lambda e, m=m: e.metrics["overall"].get(m)) for m in ("psnr", "ssim", "fid")}
    cols = [
        _cells(entries, overall["psnr"], 2),
        _cells(entries, overall["ssim"], 4),
        _cells(entries, overall["fid"], 2, lower_is_better=True),
    ]
    rows = [[_row_name(e), *(c[i] for c in cols), str(e.metrics["overall"].get("n"))] for i, e in enumerate(entries)]
    out += ["## Overall", "", *_table(["method", "PSNR (dB)", "SSIM", "FID", "pairs"], rows), ""]

    patterns = sorted({p for e in entries for p in e.metrics.get("patterns", {})})
    for metric, label, digits in (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 4)):
        columns = [_cells(entries, _pattern_value(p, metric), digits) for p in patterns]
        rows = [[_row_name(e), *(c[i] for c in columns)] for i, e in enumerate(entries)]
        out += [f"## {label} by pattern", "", *_table(["method", *patterns], rows), ""]

    for metric, label, digits, lower in (
        ("psnr", "PSNR (dB)", 2, False),
        ("ssim", "SSIM", 4, False),
        ("fid", "FID", 2, True),
        ("kid", "KID", 4, True),
    ):
        if metric in ("fid", "kid") and not _any_bucket_value(entries, metric):
            continue
        out += [
            f"## {label} by pattern and hole ratio",
            "",
            *_bucket_table(entries, patterns, metric, digits, lower),
            "",
        ]
    if diffs:
        out += ["## Paired differences in PSNR", "", DIFFERENCES_NOTE, "", *render_differences(diffs)]

    skipped = [(e.name, s) for e in entries if not e.reference for s in e.report.get("skipped", [])]
    if skipped:
        out += ["## Skipped files", ""]
        out += [f"- {name}: `{s['path']}`: {s['reason']}" for name, s in skipped] + [""]
    excluded: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)  # (method, reason) -> pairs
    for e in entries:
        for x in [] if e.reference else e.report.get("excluded", []):
            excluded[(e.name, x["reason"])].append(x)
    if excluded:
        out += ["## Pairs left out of every mean", ""]
        out += [
            f"- {name}: {len(xs)} pair(s), {reason} (e.g. {xs[0]['image']} with `{xs[0]['mask']}`)"
            for (name, reason), xs in excluded.items()
        ] + [""]
    return "\n".join(out)


def _notes(entries: Sequence[ReportEntry]) -> list[str]:
    """What was evaluated (once when every method saw the same data) and where FID is missing."""
    data: dict[str, list[str]] = {}
    for e in entries:
        im, mk = e.report.get("images"), e.report.get("masks", {})
        if im:
            text = (
                f"{im.get('count')} images ({im.get('kind')} `{im.get('source')}`, {im.get('size')} px), "
                f"masks `{mk.get('source')}` ({mk.get('pairing')}), {e.report.get('pairs')} pairs"
            )
            data.setdefault(text, []).append(e.name)
    missing: dict[str, list[str]] = {}
    for e in entries:
        fid = e.report.get("fid") or {}
        if fid and not fid.get("available", False):
            missing.setdefault(fid.get("reason", "unknown reason"), []).append(e.name)
    lines = [f"- Data: {text}" if len(data) == 1 else f"- {', '.join(names)}: {text}" for text, names in data.items()]
    lines += [f"- FID/KID unavailable ({', '.join(names)}): {reason}" for reason, names in missing.items()]
    return lines


def _bucket_table(
    entries: Sequence[ReportEntry], patterns: list[str], metric: str, digits: int, lower: bool
) -> list[str]:
    """Rows (pattern, method), columns hole ratios; the best per pattern and ratio is bold."""
    ratios = sorted({r for e in entries for cells in e.metrics.get("buckets", {}).values() for r in cells}, key=float)
    rows = []
    for pattern in patterns:
        columns = []
        for r in ratios:
            present = any(r in e.metrics.get("buckets", {}).get(pattern, {}) for e in entries)
            get = lambda e, p=pattern, r=r: e.metrics["buckets"].get(p, {}).get(r, {}).get(metric)  # noqa: E731
            columns.append(_cells(entries, get, digits, lower) if present else [""] * len(entries))
        rows += [[pattern, _row_name(e), *(c[i] for c in columns)] for i, e in enumerate(entries)]
    return _table(["pattern", "method", *ratios], rows, text_columns=2)


def _any_bucket_value(entries: Sequence[ReportEntry], metric: str) -> bool:
    return any(
        v.get(metric) is not None
        for e in entries
        for cells in e.metrics.get("buckets", {}).values()
        for v in cells.values()
    )


# ----------------------------------------------------------------------------- compare


SUMMARY_PATTERNS = ("free_form", "external")  # irregular holes: the headline of summary.md


def machine_description() -> str:
    """The CPU model and its bf16 support, as ``lscpu`` would name them (Linux; else the platform)."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    bf16 = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"{model}, {', '.join(bf16) if bf16 else 'no native bf16'}"


def comparison_pairs(entries: Sequence[ReportEntry]) -> list[tuple[str, str]]:
    """(a, b) for every learned method a against every baseline and every later learned method."""
    learned = [e.name for e in entries if not e.reference]
    refs = [e.name for e in entries if e.reference]
    return [(a, b) for a in learned for b in refs] + [(a, b) for i, a in enumerate(learned) for b in learned[i + 1 :]]


def paired_differences(entries: Sequence[ReportEntry], metric: str = "psnr") -> list[Difference]:
    """Paired bootstrap differences (:mod:`inpnet.evaluate.significance`) between the methods
    of ``entries`` that have per-pair scores (``per_image.csv``) in their folder."""
    scores = {
        e.name: read_pair_scores(e.path, metric)
        for e in entries
        if e.path is not None and (e.path / "per_image.csv").is_file()
    }
    pairs = [(a, b) for a, b in comparison_pairs(entries) if a in scores and b in scores]
    return differences(scores, pairs, metric=metric)


def _diff_cell(d: Difference | None) -> str:
    if d is None:
        return "n/a"
    verdict = {"ahead": " **ahead**", "behind": " **behind**", "tie": ""}[d.verdict]
    return f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]{verdict}"


def render_differences(diffs: Sequence[Difference], *, headed: bool = True) -> list[str]:
    """Markdown tables of ``a - b`` with their 95% intervals: one table per pattern (under a
    ``Pattern `p`:`` line when ``headed``), a row per pair."""
    cells = {(d.a, d.b, d.pattern, d.ratio): d for d in diffs}
    pairs = list(dict.fromkeys((d.a, d.b) for d in diffs))
    out: list[str] = []
    for pat in sorted({d.pattern for d in diffs}):
        ratios = sorted({d.ratio for d in diffs if d.pattern == pat and d.ratio is not None}, key=float)
        rows = [
            [
                f"{a} - {b}",
                _diff_cell(cells.get((a, b, pat, None))),
                *(_diff_cell(cells.get((a, b, pat, r))) for r in ratios),
            ]
            for a, b in pairs
            if (a, b, pat, None) in cells  # every pattern a pair was scored on has its "all" cell
        ]
        if rows:
            out += [f"Pattern `{pat}`:", ""] if headed else []
            out += [*_table(["difference", "all", *ratios], rows), ""]
    return out


DIFFERENCES_NOTE = (
    "Mean PSNR difference (dB) over the same (image, mask) pairs, with its paired bootstrap 95% "
    "interval (2,000 resamples); **ahead** / **behind** only when the interval excludes 0."
)


def render_summary(
    entries: Sequence[ReportEntry],
    *,
    warnings: Sequence[str] = (),
    diffs: Sequence[Difference] = (),
    reference: str | None = None,
) -> str:
    """The quickstart summary: overall PSNR/SSIM, per irregular-hole pattern PSNR by ratio, and
    the paired differences of the learned models to ``reference`` and to each other.

    The README embeds this file between ``<!-- summary:start -->`` and ``<!-- summary:end -->``;
    ``.ci/check_readme.py`` fails when the two disagree by more than noise.
    """
    precisions = sorted(
        {
            str(e.report.get("method_settings", {}).get("trained_precision", "unknown"))
            for e in entries
            if not e.reference
        }
    )
    trained = f"; trained in {', '.join(precisions)}" if precisions else ""
    out = [f"Machine: {machine_description()}{trained}.", ""]
    rows = [
        [
            e.name + (" (reference)" if e.reference else ""),
            _fmt(e.metrics["overall"].get("psnr"), 2),
            _fmt(e.metrics["overall"].get("ssim"), 3),
        ]
        for e in entries
    ]
    out += [*_table(["method", "PSNR (dB)", "SSIM"], rows), ""]
    for pattern in SUMMARY_PATTERNS:
        ratios = sorted({r for e in entries for r in e.metrics.get("buckets", {}).get(pattern, {})}, key=float)
        if not ratios:
            continue
        rows = [
            [
                e.name + (" (reference)" if e.reference else ""),
                *(_fmt(e.metrics["buckets"].get(pattern, {}).get(r, {}).get("psnr"), 2) for r in ratios),
            ]
            for e in entries
        ]
        out += [f"PSNR (dB) by hole ratio, pattern `{pattern}`:", "", *_table(["method", *ratios], rows), ""]
        learned = {e.name for e in entries if not e.reference}
        # each learned model against the reference, its own pre-fill (what the network adds) and the other models
        prefill = {e.name: e.report.get("method_settings", {}).get("prefill") for e in entries}
        shown = [
            d for d in diffs if d.pattern == pattern and (d.b == reference or d.b in learned or d.b == prefill.get(d.a))
        ]
        if shown:
            out += [f"Paired differences, pattern `{pattern}`. {DIFFERENCES_NOTE}", ""]
            out += render_differences(shown, headed=False)
    out += [f"- **{w}**" for w in warnings]
    return "\n".join(out).rstrip() + "\n"


def _best_name(entries: Sequence[ReportEntry], metric: str) -> str:
    """The method with the highest overall ``metric`` (a missing value counts as the lowest)."""
    return max(entries, key=lambda e: e.metrics["overall"].get(metric) or -math.inf).name


@locks_output("out_dir")
def compare_reports(
    paths: Sequence[str | Path], out_dir: str | Path, *, reference: str | None = "telea", max_gap_db: float = 1.0
) -> dict[str, Any]:
    """One table, two plots, their data (``by_ratio.csv``) and ``compare.json`` across the methods in ``paths``.

    ``compare.json``: ``{"methods": {name: metrics.json of that method}, "baselines": [names],
    "best": {"psnr": name, "ssim": name}, "reports": {name: folder}, "warnings": [sentences],
    "differences": [paired PSNR differences a - b with 95% intervals and verdicts]}``;
    the warnings (:func:`quality_warnings`, against ``reference`` and ``max_gap_db``, as the
    promotion gate judges) also head ``table.md``.
    """
    entries = load_reports(paths)
    if not entries:
        raise DataError("compare: no report folders given; pass --reports DIR (one or more)")
    out_dir = Path(out_dir)
    names = ", ".join(e.name for e in entries)
    warnings = quality_warnings(entries, reference=reference, max_gap_db=max_gap_db)
    diffs = paired_differences(entries, "psnr")
    with writing_output(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(
            out_dir / "table.md",
            render_table(entries, title=f"Inpainting comparison: {names}", warnings=warnings, diffs=diffs).encode(),
        )
        summary_md = render_summary(entries, warnings=warnings, diffs=diffs, reference=reference)
        write_atomic(out_dir / "summary.md", summary_md.encode())
        _write_by_ratio_csv(entries, out_dir / "by_ratio.csv")
        _write_plots(entries, out_dir)
    summary = {
        "methods": {e.name: e.metrics for e in entries},
        "baselines": [e.name for e in entries if e.reference],
        "best": {m: _best_name(entries, m) for m in PLOT_METRICS},
        "reports": {e.name: str(e.path) for e in entries},
        "warnings": warnings,
        "differences": [d.as_dict() for d in diffs],
    }
    _write_json(out_dir / "compare.json", summary)
    return summary
