"""Evaluation reports: metrics.json, report.json, per_image.csv, table.md, plots; and the
comparison report across methods.

One evaluation folder holds:

- ``metrics.json`` (DVC metrics, numbers only)::

    {"overall": {"psnr", "ssim", "fid" (null without weights), "n", "excluded"},
     "patterns": {pattern: {"psnr", "ssim", "n"}},
     "buckets": {pattern: {ratio "%.2f": {"psnr", "ssim", "fid", "kid", "n"}}}}

- ``report.json``: method and settings (for a trained checkpoint also its ``train_seed``, what
  made its training masks, its steps and images, its size and training FLOPs), which
  generator made the evaluation masks (``masks.generators``), the share of the known pixels
  the method cannot see (``visibility``, :func:`visibility`), FID status and reason, skipped
  files, excluded pairs with their reasons, timings;
- ``per_image.csv``: image, pattern, ratio, achieved_ratio, mask, psnr, ssim, excluded (the
  reason a pair is left out of every mean: an empty or a full hole, an exact match);
- ``table.md``: the method's rows, plus reference rows (the baselines) when given;
- ``plots/psnr_by_ratio.png``, ``plots/ssim_by_ratio.png`` and ``grid.png``.

:func:`compare_reports` reads several such folders (a folder of report folders counts as its
children, e.g. ``reports/baselines``) and writes ``table.md``, ``psnr_by_ratio.png``,
``ssim_by_ratio.png``, ``compare.json`` and ``summary.md`` (the README's quickstart table) into
one output folder. Evaluations of one variant trained with different ``train.seed`` are
grouped into one method: its tables show the means over the seeds, a seed section their
spread (mean, sample std, min-max, n) and each seed run's paired differences, and the paired
differences of the method use each pair's mean score over the seeds.
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
from inpnet.evaluate.significance import Difference, PairScores, differences, mean_pair_scores, read_pair_scores
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
    # the evaluations of one variant trained with different train.seed: metrics are their means
    runs: tuple[ReportEntry, ...] = ()

    @property
    def folders(self) -> list[Path]:
        """The evaluation folders behind this entry (one, or one per seed run)."""
        return [r.path for r in self.runs if r.path is not None] if self.runs else [self.path] if self.path else []


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


_Rows = list[dict[str, Any]]


def _counted_groups(rows: Sequence[dict[str, Any]]) -> tuple[_Rows, dict[str, _Rows], dict[tuple[str, str], _Rows]]:
    """The rows that count (no :func:`exclusion`), and the same grouped by pattern and by (pattern, ratio)."""
    by_bucket: dict[tuple[str, str], _Rows] = defaultdict(list)
    by_pattern: dict[str, _Rows] = defaultdict(list)
    counted = [row for row in rows if exclusion(row) is None]
    for row in counted:
        by_bucket[(row["pattern"], row["ratio"])].append(row)
        by_pattern[row["pattern"]].append(row)
    return counted, by_pattern, by_bucket


def visibility(rows: Sequence[dict[str, Any]], patch_size: int | None) -> dict[str, Any]:
    """The share of each image's known pixels the method cannot see, averaged like :func:`aggregate`.

    ``rows`` carry ``hidden_known`` per pair (:func:`inpnet.models.patches.hidden_known_fraction`
    for a model that sees its input patch by patch, ``patch_size`` px; 0 for one that reads
    every known pixel, as a mask channel or a classical fill does). Layout::

        {"input_view": "patches" | "pixels", "patch_size": int | None,
         "overall": {"hidden_known", "n"}, "patterns": {p: {"hidden_known", "n"}},
         "buckets": {p: {ratio: {"hidden_known", "n"}}}}
    """
    counted, by_pattern, by_bucket = _counted_groups(rows)

    def share(group: _Rows) -> dict[str, Any]:
        return {"hidden_known": _mean([float(r.get("hidden_known", 0.0)) for r in group]), "n": len(group)}

    buckets: dict[str, dict[str, Any]] = {}
    for (pattern, ratio), group in sorted(by_bucket.items()):
        buckets.setdefault(pattern, {})[ratio] = share(group)
    return {
        "input_view": "patches" if patch_size else "pixels",
        "patch_size": patch_size,
        "overall": share(counted) if counted else {"hidden_known": None, "n": 0},
        "patterns": {p: share(g) for p, g in sorted(by_pattern.items())},
        "buckets": buckets,
    }


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
    counted, by_pattern, by_bucket = _counted_groups(rows)
    if not counted:
        raise DataError(
            f"no pair can be scored: all {len(rows)} are excluded ({exclusion(rows[0]) if rows else 'no pairs'})"
        )

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
    entries = _group_seed_runs(entries)
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
            e.runs,
        )
        for e in entries
    ]


def train_seed(e: ReportEntry) -> int | None:
    """The ``train.seed`` of the checkpoint an evaluation scored (None: not a trained checkpoint)."""
    seed = e.report.get("method_settings", {}).get("train_seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _group_seed_runs(entries: list[ReportEntry]) -> list[ReportEntry]:
    """Evaluations of one learned method with distinct training seeds, as one entry of their means.

    Every run must have been scored on the same images and masks (the same pairs), or their
    per-pair means would mix different pairs.
    """
    by_name: dict[str, list[ReportEntry]] = defaultdict(list)
    for e in entries:
        by_name[e.name].append(e)
    grouped = {
        name
        for name, runs in by_name.items()
        if len(runs) > 1
        and not any(r.reference for r in runs)
        and None not in (seeds := [train_seed(r) for r in runs])
        and len(set(seeds)) == len(seeds)
    }
    out: list[ReportEntry] = []
    for e in entries:
        if e.name not in grouped:
            out.append(e)
        elif e is by_name[e.name][0]:
            out.append(_seed_entry(sorted(by_name[e.name], key=lambda r: train_seed(r) or 0)))
    return out


def _data_key(e: ReportEntry) -> tuple[Any, ...]:
    im, mk = e.report.get("images") or {}, e.report.get("masks") or {}
    return (im.get("source"), im.get("count"), im.get("size"), mk.get("source"), mk.get("manifest_sha256"))


def _recipe_key(e: ReportEntry) -> str:
    """What seed runs of one variant share: how long and on what batch it trained, and its cost."""
    settings = e.report.get("method_settings") or {}
    return json.dumps({k: settings.get(k) for k in ("training", "cost", "family")}, sort_keys=True)


def _seed_entry(runs: list[ReportEntry]) -> ReportEntry:
    first = runs[0]
    other = next((r for r in runs if _data_key(r) != _data_key(first)), None)
    if other is not None:
        raise DataError(
            f"compare: the seed runs of {first.name} were scored on different data: {first.path} on "
            f"{_data_key(first)}, {other.path} on {_data_key(other)}; evaluate every seed on the same images and masks"
        )
    recipe = next((r for r in runs if _recipe_key(r) != _recipe_key(first)), None)
    if recipe is not None:
        raise DataError(
            f"compare: {first.path} and {recipe.path} both evaluate {first.name} but differ in more than train.seed "
            f"(steps, batch or cost: {_recipe_key(first)} vs {_recipe_key(recipe)}); they are not seed runs of one variant"
        )
    report = {**first.report, "train_seeds": [train_seed(r) for r in runs]}
    return ReportEntry(first.name, _mean_tree([r.metrics for r in runs]), report, None, False, tuple(runs))


def _mean_tree(nodes: list[Any]) -> Any:
    """The mean of metrics.json trees: numbers averaged, equal counts kept, keys present in every tree."""
    first = nodes[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(n, dict) and k in n for n in nodes)]
        return {k: _mean_tree([n[k] for n in nodes]) for k in keys}
    if all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in nodes):
        if all(isinstance(n, int) for n in nodes) and len(set(nodes)) == 1:
            return first  # a pair count: the same for every run
        return _mean([float(n) for n in nodes])
    return first if all(n == first for n in nodes) else None


def _spread(values: list[float]) -> dict[str, Any]:
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": round(float(arr.mean()), 6),
        "std": round(float(arr.std(ddof=1)), 6) if arr.size > 1 else 0.0,  # sample std over the seeds
        "min": round(float(arr.min()), 6),
        "max": round(float(arr.max()), 6),
        "n": int(arr.size),
    }


def _metric_cell(metrics: dict[str, Any], pattern: str | None = None, ratio: str | None = None) -> dict[str, Any]:
    """One cell of a metrics.json-shaped tree: overall, a pattern's, or a (pattern, ratio) bucket's."""
    if pattern is None:
        cell = metrics.get("overall")
    elif ratio is None:
        cell = metrics.get("patterns", {}).get(pattern)
    else:
        cell = metrics.get("buckets", {}).get(pattern, {}).get(ratio)
    return cell if isinstance(cell, dict) else {}


def seed_spread(e: ReportEntry) -> dict[str, Any]:
    """Mean, sample std, min, max and n over the seed runs of ``e``, per metric, overall, pattern and bucket."""
    metrics = [r.metrics for r in e.runs]

    def cells(pattern: str | None = None, ratio: str | None = None) -> dict[str, Any]:
        out = {}
        for m in PLOT_METRICS:
            values = [_metric_cell(x, pattern, ratio).get(m) for x in metrics]
            numbers = [float(v) for v in values if isinstance(v, (int, float))]
            if values and len(numbers) == len(values):
                out[m] = _spread(numbers)
        return out

    patterns = sorted(set.intersection(*(set(x.get("patterns", {})) for x in metrics)))

    def ratios(p: str) -> list[str]:
        return sorted(set.intersection(*(set(x.get("buckets", {}).get(p, {})) for x in metrics)), key=float)

    return {
        "seeds": [train_seed(r) for r in e.runs],
        "folders": [str(f) for f in e.folders],
        "overall": cells(),
        "patterns": {p: cells(p) for p in patterns},
        "buckets": {p: {r: cells(p, r) for r in ratios(p)} for p in patterns},
    }


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
    entries: Sequence[ReportEntry],
    *,
    title: str,
    warnings: Sequence[str] = (),
    diffs: Sequence[Difference] = (),
    per_seed: Sequence[dict[str, Any]] = (),
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
    out += _seed_section(entries)
    if visibility := _visibility_section(entries):
        out += ["## Known pixels each method cannot see (%)", "", VISIBILITY_NOTE, "", *visibility]
    if cost := _cost_section(entries):
        out += ["## Size and training compute", "", *cost]
    if diffs:
        out += ["## Paired differences in PSNR", "", DIFFERENCES_NOTE, "", *render_differences(diffs)]
    if per_seed:
        out += ["## Paired differences per training seed", "", PER_SEED_NOTE, "", *_seed_verdicts(per_seed)]

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
    for label, describe in (("Evaluation masks", eval_masks_text), ("Training masks", train_masks_text)):
        said: dict[str, list[str]] = {}
        for e in entries:
            if (sentence := describe(e)) is not None:
                said.setdefault(sentence, []).append(e.name)
        once = len(said) == 1 and label.startswith("Eval")  # every method met the same masks
        lines += [f"- {label}: {t}" if once else f"- {label} ({', '.join(n)}): {t}" for t, n in said.items()]
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


# ------------------------------------------------------------- fairness: seeds, views, cost


def _spread_cell(cell: dict[str, Any] | None, digits: int = 2) -> str:
    if not cell:
        return "n/a"
    f = f".{digits}f"
    return f"{cell['mean']:{f}} ± {cell['std']:{f}} [{cell['min']:{f}}, {cell['max']:{f}}]"


SEEDS_NOTE = (
    "PSNR (dB) over the evaluations of one variant trained with different `train.seed`: mean ± sample std "
    "[min, max] of the runs' means; the other tables show the mean. Paired differences use each pair's "
    "mean score over the seeds."
)


def _seed_section(entries: Sequence[ReportEntry]) -> list[str]:
    grouped = [e for e in entries if e.runs]
    if not grouped:
        return []
    patterns = sorted({p for e in grouped for p in e.metrics.get("patterns", {})})
    spreads = {e.name: seed_spread(e) for e in grouped}
    rows = [
        [
            e.name,
            ", ".join(str(x) for x in spreads[e.name]["seeds"]),
            _spread_cell(spreads[e.name]["overall"].get("psnr")),
            *(_spread_cell(spreads[e.name]["patterns"].get(p, {}).get("psnr")) for p in patterns),
        ]
        for e in grouped
    ]
    out = ["## Spread over training seeds", "", SEEDS_NOTE, "", *_table(["method", "seeds", "all", *patterns], rows)]
    ratios = sorted({r for sp in spreads.values() for cells in sp["buckets"].values() for r in cells}, key=float)
    rows = [
        [p, e.name, *(_spread_cell(spreads[e.name]["buckets"].get(p, {}).get(r, {}).get("psnr")) for r in ratios)]
        for p in patterns
        for e in grouped
    ]
    return [*out, "", *_table(["pattern", "method", *ratios], rows, text_columns=2), ""]


def _seed_verdicts(per_seed: Sequence[dict[str, Any]], patterns: Sequence[str] | None = None) -> list[str]:
    """One row per (a - b): per pattern, in how many seed runs a is ahead, tied, behind."""
    cells: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for d in per_seed:
        if patterns is None or d["pattern"] in patterns:
            cells[(d["a"], d["b"])][d["pattern"]].append(d["verdict"])
    if not cells:
        return []
    shown = sorted({p for c in cells.values() for p in c})

    def cell(verdicts: list[str]) -> str:
        if not verdicts:
            return ""
        return (
            f"ahead in {verdicts.count('ahead')}/{len(verdicts)}, behind in {verdicts.count('behind')}/{len(verdicts)}"
        )

    rows = [[f"{a} - {b}", *(cell(c.get(p, [])) for p in shown)] for (a, b), c in cells.items()]
    return [*_table(["difference (per seed run)", *shown], rows), ""]


def _hidden(e: ReportEntry, pattern: str | None = None, ratio: str | None = None) -> float | None:
    # report.json's visibility has metrics.json's layout (overall, patterns, buckets)
    value = _metric_cell(e.report.get("visibility") or {}, pattern, ratio).get("hidden_known")
    return float(value) if isinstance(value, (int, float)) else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _view(e: ReportEntry) -> str:
    vis = e.report.get("visibility") or {}
    if not vis:
        return "n/a"
    return f"patches of {vis.get('patch_size')} px" if vis.get("input_view") == "patches" else "every known pixel"


VISIBILITY_NOTE = (
    "Share (%) of each image's known pixels that the method cannot see: the known pixels of every patch "
    "holding a hole pixel, for a model that sees its input patch by patch (MAE drops those patches; InP-Net "
    "with `model.patch_view` hides them). A model with a mask channel (InP-Net, CM-GAN) and the classical "
    "fills see every known pixel: 0. Computed from the evaluation masks and each model's patch size."
)


def _visibility_section(entries: Sequence[ReportEntry], *, learned_only: bool = False) -> list[str]:
    shown = [e for e in entries if e.report.get("visibility") and not (learned_only and e.reference)]
    if not shown:
        return []
    patterns = sorted({p for e in shown for p in (e.report["visibility"].get("patterns") or {})})
    name = (lambda e: e.name) if learned_only else _row_name  # the summary's tables name methods plainly
    rows = [[name(e), _view(e), _pct(_hidden(e)), *(_pct(_hidden(e, p)) for p in patterns)] for e in shown]
    out = [*_table(["method", "sees", "all", *patterns], rows, text_columns=2), ""]
    patchy = [e for e in shown if e.report["visibility"].get("input_view") == "patches"]
    if patchy and not learned_only:
        ratios = sorted(
            {r for e in patchy for cells in e.report["visibility"].get("buckets", {}).values() for r in cells},
            key=float,
        )
        rows = [[p, _row_name(e), *(_pct(_hidden(e, p, r)) for r in ratios)] for p in patterns for e in patchy]
        out += ["By pattern and hole ratio, the methods that see patches:", ""]
        out += [*_table(["pattern", "method", *ratios], rows, text_columns=2), ""]
    return out


def _cost(e: ReportEntry) -> tuple[dict[str, Any], dict[str, Any]]:
    settings = e.report.get("method_settings") or {}
    return settings.get("cost") or {}, settings.get("training") or {}


def _cost_section(entries: Sequence[ReportEntry]) -> list[str]:
    shown = [e for e in entries if _cost(e)[0]]
    if not shown:
        return []
    rows = []
    for e in shown:
        cost, training = _cost(e)
        per_image, images = cost.get("flops_per_image"), training.get("images")
        total = per_image * images if per_image is not None and images is not None else None
        rows.append(
            [
                e.name,
                _fmt(cost["params"] / 1e6 if cost.get("params") is not None else None, 2),
                _fmt(cost["disc_params"] / 1e6, 2) if cost.get("disc_params") else "none",
                _fmt(per_image / 1e9 if per_image is not None else None, 2),
                str(training.get("steps", "n/a")),
                str(images if images is not None else "n/a"),
                _fmt(total / 1e12 if total is not None else None, 1),
            ]
        )
    header = ["method", "params (M)", "disc. params (M)", "train GFLOPs / image", "steps", "images", "train TFLOPs"]
    counted = {str(_cost(e)[0].get("counted")) for e in shown}
    return [*_table(header, rows), "", *(f"FLOPs: {c}." for c in sorted(counted)), ""]


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in options.items())


def eval_masks_text(e: ReportEntry) -> str | None:
    """Which generator, options and seed made the evaluation masks of ``e``, in one sentence."""
    gens = (e.report.get("masks") or {}).get("generators")
    if not gens:
        return None
    parts = []
    for pattern, g in sorted(gens.items()):
        opts = _options_text(g.get("options") or {})
        source = f" `{g['source']}`" if g.get("source") else ""
        parts.append(f"`{pattern}` {g.get('generator')}{source}" + (f" ({opts})" if opts else ""))
    rngs = sorted({f"{g.get('rng')} with seed {g.get('seed')}" for g in gens.values() if g.get("rng")})
    return "; ".join(parts) + (f"; drawn from {' / '.join(rngs)}" if rngs else "")


def train_masks_text(e: ReportEntry) -> str | None:
    """Which generator, options and seed made the training masks of ``e``, in one sentence."""
    g = (e.report.get("method_settings") or {}).get("train_masks")
    if not g:
        return None
    mix = ", ".join(f"{k} {100 * float(v):.0f}%" for k, v in (g.get("patterns") or {}).items())
    opts = "; ".join(f"{k}: {_options_text(o)}" for k, o in (g.get("options") or {}).items() if o)
    lo, hi = g.get("ratio") or (None, None)
    seeds = e.report.get("train_seeds") or []  # seed runs grouped into one method: each run its own seed
    seed = f"s {', '.join(map(str, seeds))} (one per run)" if len(seeds) > 1 else f" {g.get('seed')}"
    text = (
        f"{g.get('generator')} of {mix} ({opts}), hole ratio {lo}-{hi} (warm-up {g.get('warmup_steps')} steps), "
        f"{'a new mask each step' if g.get('dynamic') else 'one fixed mask per image'}, drawn from {g.get('rng')} "
        f"with train.seed{seed}"
    )
    if g.get("objects"):
        o = g["objects"]
        text += f"; {100 * float(o['object_prob']):.0f}% object-shaped holes from `{o['object_dir']}`"
    return text


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


def _pair_scores(entries: Sequence[ReportEntry], metric: str) -> dict[str, PairScores]:
    """Per-pair scores of the entries whose folders all hold ``per_image.csv``; a method with
    several seed runs gets each pair's mean over them (:func:`mean_pair_scores`)."""
    return {
        e.name: mean_pair_scores([read_pair_scores(f, metric) for f in e.folders])
        for e in entries
        if e.folders and all((f / "per_image.csv").is_file() for f in e.folders)
    }


def paired_differences(entries: Sequence[ReportEntry], metric: str = "psnr") -> list[Difference]:
    """Paired bootstrap differences (:mod:`inpnet.evaluate.significance`) between the methods
    of ``entries`` that have per-pair scores (``per_image.csv``) in their folders; a method
    with several training seeds is compared by its per-pair mean over the seeds."""
    scores = _pair_scores(entries, metric)
    pairs = [(a, b) for a, b in comparison_pairs(entries) if a in scores and b in scores]
    return differences(scores, pairs, metric=metric)


def seed_differences(entries: Sequence[ReportEntry], metric: str = "psnr") -> list[dict[str, Any]]:
    """For a method with several seed runs: each run's paired difference to every method it is
    compared with (per pattern, all ratios), so a reader sees whether a claim holds for every seed."""
    scores = _pair_scores(entries, metric)
    out: list[dict[str, Any]] = []
    runs = {e.name: e.runs for e in entries if e.runs}
    for a, b in comparison_pairs(entries):
        if a not in runs or a not in scores or b not in scores:
            continue
        for run in runs[a]:
            assert run.path is not None  # a seed run is read from its folder
            mine = {"run": read_pair_scores(run.path, metric), b: scores[b]}
            found = differences(mine, [("run", b)], metric=metric)
            out.extend({**d.as_dict(), "a": a, "seed": train_seed(run)} for d in found if d.ratio is None)
    return out


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


PER_SEED_NOTE = (
    "Each seed run of a method against the other method on the same pairs, with its own paired bootstrap "
    "interval: a claim that holds for every seed is ahead in n/n."
)

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
    per_seed: Sequence[dict[str, Any]] = (),
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
    grouped = [e for e in entries if e.runs]
    if grouped:
        rows = []
        for e in grouped:
            spread = seed_spread(e)
            rows.append(
                [
                    e.name,
                    str(len(e.runs)),
                    _spread_cell(spread["overall"].get("psnr")),
                    *(
                        _spread_cell(spread["patterns"].get(p, {}).get("psnr"))
                        for p in SUMMARY_PATTERNS
                        if p in spread["patterns"]
                    ),
                ]
            )
        heads = [p for p in SUMMARY_PATTERNS if any(p in seed_spread(e)["patterns"] for e in grouped)]
        out += [f"Over training seeds. {SEEDS_NOTE}", "", *_table(["method", "seeds", "all", *heads], rows), ""]
        out += _seed_verdicts([d for d in per_seed if d["b"] == reference], SUMMARY_PATTERNS)
    if visibility := _visibility_section(entries, learned_only=True):
        out += [f"Known pixels each model cannot see (%). {VISIBILITY_NOTE}", "", *visibility]
    if cost := _cost_section(entries):
        out += ["Size and training compute:", "", *cost]
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

    ``compare.json``: ``{"methods": {name: metrics.json of that method (the mean over its seed
    runs)}, "baselines": [names], "best": {"psnr": name, "ssim": name}, "reports": {name: folder,
    or the folders of its seed runs}, "warnings": [sentences], "differences": [paired PSNR
    differences a - b with 95% intervals and verdicts], "seeds": {name: spread over its seed
    runs}, "seed_differences": [each seed run's differences], "visibility": {name: the known
    pixels it cannot see}, "cost": {name: parameters, FLOPs, steps, images}, "masks":
    {"evaluation": {name: generators}, "training": {name: generator}}}``;
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
    per_seed = seed_differences(entries, "psnr")
    with writing_output(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        title = f"Inpainting comparison: {names}"
        table = render_table(entries, title=title, warnings=warnings, diffs=diffs, per_seed=per_seed)
        write_atomic(out_dir / "table.md", table.encode())
        summary_md = render_summary(entries, warnings=warnings, diffs=diffs, reference=reference, per_seed=per_seed)
        write_atomic(out_dir / "summary.md", summary_md.encode())
        _write_by_ratio_csv(entries, out_dir / "by_ratio.csv")
        _write_plots(entries, out_dir)
    summary = {
        "methods": {e.name: e.metrics for e in entries},
        "baselines": [e.name for e in entries if e.reference],
        "best": {m: _best_name(entries, m) for m in PLOT_METRICS},
        "reports": {e.name: str(e.path) if e.path else [str(f) for f in e.folders] for e in entries},
        "warnings": warnings,
        "differences": [d.as_dict() for d in diffs],
        "seeds": {e.name: seed_spread(e) for e in entries if e.runs},
        "seed_differences": per_seed,
        "visibility": {e.name: e.report["visibility"] for e in entries if e.report.get("visibility")},
        "cost": {e.name: {**_cost(e)[0], "training": _cost(e)[1]} for e in entries if _cost(e)[0]},
        "masks": {
            "evaluation": {e.name: (e.report.get("masks") or {}).get("generators") for e in entries},
            "training": {
                e.name: (e.report.get("method_settings") or {}).get("train_masks")
                for e in entries
                if (e.report.get("method_settings") or {}).get("train_masks")
            },
        },
    }
    _write_json(out_dir / "compare.json", summary)
    return summary
