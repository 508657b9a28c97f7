"""From finished runs to numbers: per-point summaries, thresholds, pairwise comparisons, sentences.

Pure functions on :class:`RunRecord` lists (no files, no torch); :mod:`t5lab.study.report` reads the
runs and writes what these return. Intervals are Student-t intervals over seeds
(:func:`t5lab.study.stats.t_interval`), comparisons Welch's t-test (:func:`t5lab.study.stats.welch`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from t5lab.study.stats import Comparison, Interval, curve_band, first_reaching, t_interval, welch

ALPHA = 0.05
DEFAULT_METRIC = {"seq2seq": "exact_match", "text": "loss", "classification": "accuracy"}


def lower_is_better(metric: str) -> bool:
    """Losses and perplexities go down; accuracies and exact match go up."""
    return any(word in metric for word in ("loss", "ppl", "perplexity", "error"))


@dataclass
class RunRecord:
    """One finished run of a point: final metrics, validation curves, wall time."""

    point: str
    seed: int
    final: dict[str, float]
    curves: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    seconds: float | None = None
    steps: int | None = None


@dataclass
class PointSummary:
    key: str
    labels: dict[str, str]
    group: str
    variant: str
    metric: str  # the primary metric's base name (exact_match, loss ...)
    runs: int
    params: int | None = None
    train_tokens: int | None = None
    finals: dict[str, Interval] = field(default_factory=dict)  # test_* (else val_*) metric -> interval
    threshold: float | None = None
    steps_to_threshold: Interval | None = None
    seconds_to_threshold: Interval | None = None
    reached: int = 0
    band: list[tuple[float, Interval]] = field(default_factory=list)  # primary val curve, mean and CI per step

    @property
    def primary(self) -> Interval | None:
        return self.finals.get(final_name(self.metric, self.finals))


def final_name(metric: str, finals: dict[str, object]) -> str:
    """``test_<metric>`` when the runs were tested, else ``val_<metric>``."""
    return f"test_{metric}" if f"test_{metric}" in finals or f"val_{metric}" not in finals else f"val_{metric}"


def summarize_point(key: str, labels: dict[str, str], group: str, variant: str, metric: str,
                    records: list[RunRecord], threshold: float | None = None) -> PointSummary:
    """Mean ± 95% t-interval of every final metric over the seeds; steps/time to ``threshold``.

    Steps to threshold are the first validation step whose ``val_<metric>`` reaches it (per
    seed, only seeds that reach it); time to threshold scales each run's wall time by that step's
    share of the run's steps (step times taken as uniform).
    """
    s = PointSummary(key, labels, group, variant, metric, len(records), threshold=threshold)
    names = sorted({k for r in records for k in r.final})
    for name in names:
        values = [r.final[name] for r in records if name in r.final and math.isfinite(r.final[name])]
        if values:
            s.finals[name] = t_interval(values)
    curve = f"val_{metric}"
    curves = [r.curves[curve] for r in records if curve in r.curves and r.curves[curve][0]]
    s.band = curve_band(curves)
    if threshold is not None:
        lower = lower_is_better(metric)
        steps, seconds = [], []
        for r in records:
            xs, ys = r.curves.get(curve, ([], []))
            hit = first_reaching(xs, ys, threshold, lower)
            if hit is None:
                continue
            steps.append(hit)
            if r.seconds is not None and r.steps:
                seconds.append(r.seconds * hit / r.steps)
        s.reached = len(steps)
        s.steps_to_threshold = t_interval(steps) if steps else None
        s.seconds_to_threshold = t_interval(seconds) if seconds else None
    return s


def default_threshold(metric: str, groups_records: list[list[RunRecord]]) -> float | None:
    """The worst of the runs' best ``val_<metric>`` values: a level every run of the group reaches."""
    lower = lower_is_better(metric)
    bests = []
    for records in groups_records:
        for r in records:
            ys = r.curves.get(f"val_{metric}", ([], []))[1]
            if ys:
                bests.append(min(ys) if lower else max(ys))
    if not bests:
        return None
    return max(bests) if lower else min(bests)


@dataclass
class PairResult:
    group: str
    metric: str
    a: str
    b: str
    comparison: Comparison | None
    sentence: str


def compare_pair(group: str, metric: str, a: str, b: str, values_a: list[float], values_b: list[float]) -> PairResult:
    """Welch's test of ``a`` against ``b`` on one metric, and the plain sentence saying it.

    The sentence names the better one first; "by" is its advantage (higher is better, except for
    losses), with the 95% CI of that advantage, Welch's p-value and Cohen's d.
    """
    if len(values_a) < 2 or len(values_b) < 2:
        return PairResult(group, metric, a, b, None,
                          f"{a} vs {b} on {group}: {len(values_a)} and {len(values_b)} seed(s), too few for a test (use seeds >= 2)")
    c = welch(values_a, values_b)
    lower = lower_is_better(metric)
    # orient so that the first named is ahead: advantage > 0
    sign = -1.0 if lower else 1.0
    adv = sign * c.diff
    first, second = (a, b) if adv >= 0 else (b, a)
    lo, hi = sorted((sign * c.low, sign * c.high))
    if adv < 0:
        adv, lo, hi = -adv, -hi, -lo
    stats = f"95% CI [{_num(lo)}, {_num(hi)}], p={_p(c.p)}, Cohen's d={_d(c.cohens_d)} (Welch, n={c.n_a} vs {c.n_b})"
    if c.p < ALPHA and adv > 0:
        text = f"{first} beats {second} on {group} by {_num(adv)} {metric}{' (lower)' if lower else ''}, {stats}"
    elif adv == 0 and c.low == c.high:
        text = f"{a} and {b} tie on {group} ({metric} equal in every seed), {stats}"
    else:
        text = f"{first} and {second} do not differ significantly on {group}: {first} ahead by {_num(adv)} {metric}, {stats}"
    return PairResult(group, metric, a, b, c, text)


def pairwise(summaries: list[PointSummary], records: dict[str, list[RunRecord]]) -> list[PairResult]:
    """Every pair of variants within each comparison group, on the group's primary metric."""
    out = []
    groups: dict[str, list[PointSummary]] = {}
    for s in summaries:
        groups.setdefault(s.group, []).append(s)
    for group, members in groups.items():
        for i, sa in enumerate(members):
            for sb in members[i + 1 :]:
                name = final_name(sa.metric, sa.finals)
                va = [r.final[name] for r in records[sa.key] if name in r.final]
                vb = [r.final[name] for r in records[sb.key] if name in r.final]
                out.append(compare_pair(title(group), sa.metric, sa.variant, sb.variant, va, vb))
    return out


def title(group: str) -> str:
    """A comparison group for people: ``"task=text,objective=lm"`` -> ``"text, lm"`` (``-`` dropped)."""
    values = [part.split("=", 1)[-1] for part in group.split(",")]
    return ", ".join(v for v in values if v != "-") or group


def _num(x: float, digits: int = 3) -> str:
    if math.isinf(x) or math.isnan(x):
        return str(x)
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def _d(d: float) -> str:
    return str(abs(d)) if math.isinf(d) or math.isnan(d) else f"{abs(d):.2f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.2g}"
