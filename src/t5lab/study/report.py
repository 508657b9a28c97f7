"""The study report: results.csv, report.md and PNGs, rebuilt from the finished runs of a study dir.

Only runs whose config equals the plan's (``plan.json``) and that finished (DONE) count; a point
with fewer finished seeds than planned is reported with what it has (``runs`` column).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from t5lab.errors import T5LabError
from t5lab.study.aggregate import (
    DEFAULT_METRIC,
    PairResult,
    PointSummary,
    RunRecord,
    default_threshold,
    final_name,
    lower_is_better,
    pairwise,
    summarize_point,
    title,
)
from t5lab.study.layout import PLAN, read_timings


def load_plan(root: Path) -> dict[str, Any]:
    path = root / PLAN
    if not path.is_file():
        raise T5LabError(f"--report {root}: not a study directory (no {PLAN}); give <out>/<study name>")
    return json.loads(path.read_text())


def point_metric(plan: dict[str, Any], point: dict[str, Any]) -> str:
    """The primary metric of a point: the study's ``metric`` (by task label) or the task kind's default."""
    metric = plan.get("metric")
    task = point["labels"].get("task")
    if isinstance(metric, dict):
        metric = metric.get(task, metric.get("default"))
    return str(metric or DEFAULT_METRIC.get(point["info"].get("task_kind", "seq2seq"), "loss"))


def collect(root: Path) -> tuple[dict[str, Any], dict[str, list[RunRecord]]]:
    """The plan and, per point key, the records of its finished runs."""
    from t5lab.config import validate
    from t5lab.explore.run import MetricsTable
    from t5lab.train.run import DONE, find_runs

    plan = load_plan(root)
    timings = read_timings(root)
    records: dict[str, list[RunRecord]] = {}
    for point in plan["points"]:
        out = []
        for seed, raw in zip(plan["seeds"], point["configs"]):
            cfg = validate(raw)
            done = [d for d in find_runs(root / "runs", cfg) if (d / DONE).is_file()]
            if not done:
                continue
            run = done[0]
            summary = json.loads((run / DONE).read_text())
            table = MetricsTable.read(run / "metrics.csv")
            curves = {c: table.series(c) for c in table.columns if c.startswith("val_")}
            out.append(RunRecord(point["key"], seed, dict(summary.get("metrics", {})), curves,
                                 timings.get(str(run.relative_to(root))), summary.get("step")))
        records[point["key"]] = out
    return plan, records


def summarize(plan: dict[str, Any], records: dict[str, list[RunRecord]]) -> list[PointSummary]:
    thresholds = plan.get("threshold")
    groups: dict[str, list[dict[str, Any]]] = {}
    for point in plan["points"]:
        groups.setdefault(point["group"], []).append(point)
    out = []
    for group, points in groups.items():
        metric = point_metric(plan, points[0])
        task = points[0]["labels"].get("task")
        if isinstance(thresholds, dict):  # by group (e.g. "task=text,objective=lm"), task label, or default
            threshold = thresholds.get(group, thresholds.get(task, thresholds.get("default")))
        else:
            threshold = thresholds
        if threshold is None:
            threshold = default_threshold(metric, [records[p["key"]] for p in points])
        for p in points:
            s = summarize_point(p["key"], p["labels"], group, p["variant"], point_metric(plan, p), records[p["key"]], threshold)
            s.params = p["info"].get("params")
            s.train_tokens = p["info"].get("train_tokens")
            out.append(s)
    return out


def write_report(root: str | Path) -> Path:
    """Write ``results.csv``, ``report.md`` and the PNGs into the study directory; returns report.md."""
    from t5lab.fileio import atomic_write_text

    root = Path(root)
    plan, records = collect(root)
    summaries = summarize(plan, records)
    pairs = pairwise(summaries, records)
    atomic_write_text(root / "results.csv", results_csv(summaries))
    figures = plot_all(root, summaries)
    atomic_write_text(root / "report.md", report_md(plan, summaries, pairs, figures))
    print(f"study report: {root / 'report.md'}")
    return root / "report.md"


# ------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------


def results_csv(summaries: list[PointSummary]) -> str:
    """One row per point: labels, params, runs, mean / CI of every final metric, threshold columns."""
    axes = list(dict.fromkeys(a for s in summaries for a in s.labels))
    metrics = sorted({m for s in summaries for m in s.finals})
    head = ["point", *axes, "params", "train_tokens", "runs", "metric"]
    for m in metrics:
        head += [f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high"]
    head += ["threshold", "reached", "steps_to_threshold_mean", "steps_to_threshold_ci_low", "steps_to_threshold_ci_high",
             "seconds_to_threshold_mean"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(head)
    for s in summaries:
        row: list[Any] = [s.key, *(s.labels.get(a, "") for a in axes), s.params, s.train_tokens, s.runs, s.metric]
        for m in metrics:
            i = s.finals.get(m)
            row += [_cell(i.mean), _cell(i.low), _cell(i.high)] if i else ["", "", ""]
        st, sec = s.steps_to_threshold, s.seconds_to_threshold
        row += [_cell(s.threshold), s.reached, *( [_cell(st.mean), _cell(st.low), _cell(st.high)] if st else ["", "", ""]),
                _cell(sec.mean) if sec else ""]
        w.writerow(row)
    return buf.getvalue()


def _cell(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


def _ci(i: Any, digits: int = 3) -> str:
    if i is None:
        return "-"
    if math.isnan(i.low):
        return f"{i.mean:.{digits}g} (n=1)"
    return f"{i.mean:.{digits}g} ± {i.half_width:.2g}"


def report_md(plan: dict[str, Any], summaries: list[PointSummary], pairs: list[PairResult], figures: list[Path]) -> str:
    match = plan.get("match", {})
    fair = []
    if match.get("params"):
        fair.append(f"parameter counts matched within {match.get('tolerance', 0.05):.0%} (counted on the meta device)")
    if match.get("tokens"):
        fair.append("the same training-token budget per comparison group (non-pad tokens read: input + target)")
    planned = len(plan["seeds"])
    lines = [
        f"# Study `{plan['study']}`",
        "",
        f"{len(plan['points'])} points x {planned} seeds (train.seed {', '.join(map(str, plan['seeds']))}). "
        f"Fairness: {'; '.join(fair) or 'none (match: not set)'}.",
        "Values are means over seeds ± the half-width of a 95% Student-t interval; comparisons are Welch's t-tests "
        "with Cohen's d (pooled SD).",
        "",
        "## Results",
        "",
        "| point | params | train tokens | runs | final metric | steps to threshold | s to threshold |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for s in summaries:
        name = final_name(s.metric, s.finals)
        thr = "-" if s.threshold is None else f"{s.reached}/{s.runs} reach {s.threshold:.3g}: {_ci(s.steps_to_threshold)}"
        lines.append(
            f"| {s.key} | {s.params or 0:,} | {s.train_tokens or 0:,} | {s.runs}/{planned} | {name} {_ci(s.primary)} | "
            f"{thr} | {_ci(s.seconds_to_threshold)} |"
        )
    lines += ["", "## Comparisons", ""]
    lines += [f"- {p.sentence}" for p in pairs] or ["- (no pairs: the study has one variant per group)"]
    tested = [p for p in pairs if p.comparison is not None]
    if len(tested) > 1:
        from t5lab.study.stats import holm

        adjusted = holm([p.comparison.p for p in tested])
        kept = [f"{p.a} vs {p.b} on {p.group} (p_holm={q:.2g})" for p, q in zip(tested, adjusted) if q < 0.05]
        lines.append(
            f"- Holm-Bonferroni over these {len(tested)} tests (family-wise 5%): "
            + (", ".join(kept) if kept else "no difference survives")
        )
    for group, what in mixed_targets(plan).items():
        lines.append(f"- caution: in {title(group)} the points predict different targets ({what}), so their losses "
                     "measure different things; compare them within an objective, or downstream")
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{f.stem}]({f.name})" for f in figures]
    lines += ["", "Full numbers (every final metric, CI bounds): `results.csv`. Rebuild: `t5lab study --report <this dir>`.", ""]
    return "\n".join(lines)


def mixed_targets(plan: dict[str, Any]) -> dict[str, str]:
    """Groups whose points train on different text objectives or loss masks (``objective: lm``)."""
    out: dict[str, set[str]] = {}
    for point in plan["points"]:
        data = point["configs"][0]["data"]
        if data.get("objective") is not None:
            out.setdefault(point["group"], set()).add(f"{point['variant']}: {data['objective']}, loss on {data.get('loss_on')}")
    return {g: "; ".join(sorted(v)) for g, v in out.items() if len({x.split(": ", 1)[1] for x in v}) > 1}


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", text).strip("_") or "all"


def plot_all(root: Path, summaries: list[PointSummary]) -> list[Path]:
    """Curves with bands and a bar chart per comparison group, a variants x groups heatmap."""
    from t5lab.explore.plots import atomic_savefig, pyplot

    plt = pyplot()
    groups: dict[str, list[PointSummary]] = {}
    for s in summaries:
        groups.setdefault(s.group, []).append(s)
    paths = []
    for group, members in groups.items():
        if any(s.band for s in members):
            fig, ax = plt.subplots(figsize=(6.4, 4.0))
            for s in members:
                if not s.band:
                    continue
                xs = [x for x, _ in s.band]
                ax.plot(xs, [i.mean for _, i in s.band], label=s.variant)
                if all(not math.isnan(i.low) for _, i in s.band):
                    ax.fill_between(xs, [i.low for _, i in s.band], [i.high for _, i in s.band], alpha=0.2)
            if members[0].threshold is not None:
                ax.axhline(members[0].threshold, color="gray", linestyle="--", linewidth=0.8, label="threshold")
            ax.set_xlabel("step")
            ax.set_ylabel(f"val_{members[0].metric} (mean, 95% CI band)")
            ax.set_title(title(group))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            paths.append(atomic_savefig(fig, root / f"curves_{_slug(group)}.png"))
            plt.close(fig)
        bars = [s for s in members if s.primary is not None]
        if bars:
            fig, ax = plt.subplots(figsize=(max(3.5, 1.1 * len(bars) + 1.5), 3.6))
            means = [s.primary.mean for s in bars]
            errs = [0.0 if math.isnan(s.primary.low) else s.primary.half_width for s in bars]
            ax.bar([s.variant for s in bars], means, yerr=errs, capsize=4, color="tab:blue", alpha=0.8)
            ax.set_ylabel(f"{final_name(bars[0].metric, bars[0].finals)} (95% CI)")
            ax.set_title(title(group))
            ax.grid(alpha=0.3, axis="y")
            fig.tight_layout()
            paths.append(atomic_savefig(fig, root / f"bars_{_slug(group)}.png"))
            plt.close(fig)
    heat = _heatmap(plt, summaries, groups)
    if heat is not None:
        paths.append(atomic_savefig(heat, root / "heatmap.png"))
        plt.close(heat)
    return paths


def _heatmap(plt: Any, summaries: list[PointSummary], groups: dict[str, list[PointSummary]]) -> Any:
    """Variants (rows) x groups (columns); colour = the cell's rank within its column (metrics differ)."""
    variants = list(dict.fromkeys(s.variant for s in summaries))
    columns = list(groups)
    if not variants or not columns:
        return None
    value = [[math.nan] * len(columns) for _ in variants]
    colour = [[math.nan] * len(columns) for _ in variants]
    for j, group in enumerate(columns):
        cells = [(variants.index(s.variant), s.primary.mean) for s in groups[group] if s.primary is not None]
        if not cells:
            continue
        lower = lower_is_better(groups[group][0].metric)
        lo, hi = min(v for _, v in cells), max(v for _, v in cells)
        for i, v in cells:
            value[i][j] = v
            score = 0.5 if hi == lo else (v - lo) / (hi - lo)
            colour[i][j] = 1.0 - score if lower else score
    fig, ax = plt.subplots(figsize=(1.6 * len(columns) + 2.0, 0.55 * len(variants) + 1.8))
    ax.imshow(colour, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(columns)), [f"{title(c)}\n({groups[c][0].metric})" for c in columns], fontsize=7, rotation=20, ha="right")
    ax.set_yticks(range(len(variants)), variants)
    for i in range(len(variants)):
        for j in range(len(columns)):
            if not math.isnan(value[i][j]):
                ax.text(j, i, f"{value[i][j]:.3g}", ha="center", va="center", color="white" if colour[i][j] < 0.6 else "black", fontsize=8)
    ax.set_title("mean final metric (colour: best in column = yellow)", fontsize=9)
    fig.tight_layout()
    return fig
