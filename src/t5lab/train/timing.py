"""Where a run's wall time goes: one stopwatch, every instant charged to exactly one part.

A run (t5lab.train.run) starts a :class:`Stopwatch`; the code that does a part of the work wraps
it in ``with phase("checkpointing"):`` (a no-op when no run is timing). Parts nest: the inner one
is charged while it runs and the outer one resumes after, so the parts always sum to the wall time
between :meth:`Stopwatch.start` and :meth:`Stopwatch.stop` (plus the start-up the run was given).
What no part claims is ``other`` (Lightning's loop, the progress bar, hooks).

Work done in other processes (DataLoader workers, spawned DDP workers) is not seen here: this
process's wait for it lands in ``other``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# printed and written in this order; "other" is what no phase claimed
PARTS = (
    "startup",  # process start to the run, and the heavy imports (torch, Lightning, transformers)
    "data",  # generating the splits, tokenising them, collating batches
    "model",  # building (or loading) the model
    "train_steps",  # forward, backward and optimizer steps
    "eval",  # validation / test forward passes (losses, token accuracy) and their bookkeeping
    "decoding",  # greedy generation for exact match (validation and test)
    "checkpointing",  # checkpoints and the final save_pretrained
    "logging",  # metrics.csv, samples.txt
    "other",
)

_IMPORTED_AT = time.time()


def process_start() -> float:
    """Wall-clock time (``time.time()``) this process started.

    psutil's process creation time where psutil is installed; else the time this module was
    imported (``t5lab train`` imports it first thing, so start-up is then undercounted by the
    interpreter's own start only).
    """
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # psutil missing, or no access to the process table
        return _IMPORTED_AT


class Stopwatch:
    """Charges elapsed time to the innermost open phase (``other`` when none is open)."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self._stack: list[str] = ["other"]
        self._since = 0.0
        self._started = 0.0
        self.wall_s = 0.0
        self.running = False

    def start(self, startup_s: float = 0.0) -> None:
        """Start the clock; ``startup_s`` (time before the run began, e.g. since process start) is
        charged to ``startup`` and counted in the wall time."""
        self._since = self._started = time.perf_counter()
        self.parts["startup"] += max(0.0, startup_s)
        self.wall_s = max(0.0, startup_s)
        self.running = True

    def _charge(self) -> None:
        now = time.perf_counter()
        self.parts[self._stack[-1]] += now - self._since
        self._since = now

    def push(self, name: str) -> None:
        if name not in self.parts:
            raise ValueError(f"unknown timing part {name!r}; one of {', '.join(PARTS)}")
        if self.running:
            self._charge()
        self._stack.append(name)

    def pop(self) -> None:
        if self.running:
            self._charge()
        if len(self._stack) > 1:
            self._stack.pop()

    def switch(self, name: str) -> None:
        """Replace the innermost phase (for hook pairs such as batch start / batch end)."""
        self.pop()
        self.push(name)

    def stop(self) -> dict[str, float]:
        """Stop the clock; returns the parts (seconds), which sum to :attr:`wall_s`."""
        if self.running:
            self._charge()
            self.wall_s += time.perf_counter() - self._started
            self.running = False
        return dict(self.parts)

    def report(self) -> dict[str, object]:
        """``{"wall_s": ..., "parts_s": {...}}`` for ``timing.json``."""
        return {"wall_s": round(self.wall_s, 4), "parts_s": {k: round(v, 4) for k, v in self.parts.items()}}

    def table(self) -> str:
        """Lines saying where the time went, largest first, with shares of the wall time."""
        wall = max(self.wall_s, 1e-9)
        rows = sorted(self.parts.items(), key=lambda kv: -kv[1])
        lines = [f"wall time {self.wall_s:.1f} s:"]
        lines += [f"  {name:<14}{secs:8.2f} s  {100 * secs / wall:5.1f}%" for name, secs in rows if secs > 0]
        return "\n".join(lines)


_current: Stopwatch | None = None


def current() -> Stopwatch | None:
    """The stopwatch of the run in progress in this process, if any."""
    return _current


def set_current(watch: Stopwatch | None) -> None:
    global _current
    _current = watch


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Charge the enclosed work to ``name`` on the running stopwatch (nothing when none runs)."""
    watch = _current
    if watch is None:
        yield
        return
    watch.push(name)
    try:
        yield
    finally:
        watch.pop()
