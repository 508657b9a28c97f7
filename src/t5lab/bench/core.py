"""Side-by-side timing: interleaved repeats, medians, ratios against a reference.

Absolute times on a shared CPU are noise; ratios of medians measured in the same run, with the
candidates interleaved round by round, are not. Every comparison in :mod:`t5lab.bench.cases`
returns :class:`Comparison` rows built from :func:`interleaved`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Measurement:
    """Seconds per call of one candidate, and how much work (tokens, samples) one call does."""

    name: str
    seconds: list[float]
    work_per_call: float
    unit: str

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        """Work per second (tokens/s, samples/s), from the median time."""
        return self.work_per_call / self.median_s


@dataclass
class Comparison:
    """One row of the report: a candidate against its reference."""

    case: str
    candidate: str
    reference: str
    metric: str  # e.g. "tokens/s", "ms/token"
    candidate_value: float
    reference_value: float | None  # None: a record with no reference (e.g. time to a target)
    target: str  # e.g. ">= 1.0x"
    higher_is_better: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """Speed-up of the candidate over the reference (> 1 is faster), whatever the metric."""
        if self.reference_value is None:
            return None
        if self.higher_is_better:
            return self.candidate_value / self.reference_value
        return self.reference_value / self.candidate_value

    @property
    def raw_ratio(self) -> float | None:
        """candidate / reference in the metric's own unit (what the target is stated in)."""
        if self.reference_value is None:
            return None
        return self.candidate_value / self.reference_value

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "raw_ratio": self.raw_ratio}


def interleaved(
    candidates: dict[str, Callable[[], object]],
    work_per_call: dict[str, float] | float,
    unit: str,
    repeats: int = 5,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> dict[str, Measurement]:
    """Time each candidate ``repeats`` times, round-robin, after ``warmup`` untimed calls each.

    The order rotates every round so that no candidate always runs right after another (caches,
    CPU frequency). ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read.
    """
    names = list(candidates)
    sync = sync or (lambda: None)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    sync()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            sync()
            start = time.perf_counter()
            candidates[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    work = work_per_call if isinstance(work_per_call, dict) else {n: work_per_call for n in names}
    return {n: Measurement(n, times[n], work[n], unit) for n in names}
