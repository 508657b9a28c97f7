"""Multi-task mixtures of seq2seq tasks, each marked by a text prefix.

T5 trains one model on many tasks by mixing their examples and writing the task into the input
as a prefix ("translate English to German: ...", Raffel et al., 2020, "Exploring the Limits of
Transfer Learning with a Unified Text-to-Text Transformer", sec. 2.4; mixing rates sec. 3.5.2).
Here a mixture serves one task (the *evaluated* one, whose records make the val and test splits)
and helper tasks that only add training records: ``histogram`` mixed with ``copy`` of the same
strings learns the routing of target j to input j from copy while it learns to count (docs/tasks.md).

Example::

    task = get_task("mixture", tasks={
        "histogram": {"options": {"preset": "seed"}, "prefix": "histogram: "},
        "copy": {"options": {"min_len": 10, "max_len": 80}, "prefix": "copy: "},
    }, evaluate="histogram")
    build_splits(task, train=1000, val=100, test=100)  # val/test: histogram only

In a YAML config ``tasks`` is such a mapping (a list there would be a sweep axis); a key is the
entry's label and its task name unless the entry names a ``task``. Nothing depends on the order of
the entries (a config written back with sorted keys draws the same data): each entry's records
come from a seed derived from its label, and the evaluated entry is named, not first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from t5lab.errors import ConfigError
from t5lab.tasks.base import Pair, Record, Task, TaskKind, register_task
from t5lab.tasks.registry import _draw_unique, get_task

_ENTRY_KEYS = ("task", "options", "prefix", "suffix", "rate")


@dataclass(frozen=True)
class _Entry:
    label: str
    name: str
    task: Task
    options: dict[str, Any]
    prefix: str
    suffix: str
    rate: float

    def marked(self, records: list[Record]) -> list[Pair]:
        return [Pair(self.prefix + r.input + self.suffix, r.target) for r in records]

    def as_option(self) -> dict[str, Any]:
        return {"task": self.name, "options": self.options, "prefix": self.prefix, "suffix": self.suffix,
                "rate": self.rate}


def _entry(i: int, label: str | None, spec: Any) -> _Entry:
    where = f"mixture tasks[{label if label is not None else i}]"
    if spec is None and label is not None:
        spec = {}
    if isinstance(spec, str):
        spec = {"task": spec}
    if isinstance(spec, dict) and label is not None:
        spec = {"task": label, **spec}
    if not isinstance(spec, dict) or "task" not in spec:
        raise ConfigError(f"{where}={spec!r}: give a mapping such as {{task: copy, prefix: 'copy: ', rate: 1}}")
    unknown = sorted(set(spec) - set(_ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{where} has no key {unknown[0]!r}; its keys are: {', '.join(_ENTRY_KEYS)}")
    name, options = spec["task"], spec.get("options") or {}
    prefix, suffix, rate = spec.get("prefix", ""), spec.get("suffix", ""), spec.get("rate", 1.0)
    if not isinstance(name, str) or name == "mixture":
        raise ConfigError(f"{where}.task={name!r}: give the name of a seq2seq task (not a mixture)")
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.options={options!r}: give a mapping of the task's options")
    for key, text, example in (("prefix", prefix, "'copy: '"), ("suffix", suffix, "' copy'")):
        if not isinstance(text, str):
            raise ConfigError(f"{where}.{key}={text!r}: give a string such as {example}")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
        raise ConfigError(f"{where}.rate={rate!r}: give a positive number (its share of the training split)")
    task = get_task(name, **options)
    if task.kind != "seq2seq":
        raise ConfigError(f"{where}.task={name!r} is a {task.kind} task; a mixture mixes seq2seq tasks only")
    if not task.is_generative:
        raise ConfigError(f"{where}.task={name!r} is read from a file; a mixture draws generated seq2seq tasks only")
    return _Entry(label if label is not None else name, name, task, dict(options), prefix, suffix, float(rate))


def shares(total: int, rates: list[float]) -> list[int]:
    """``total`` split in proportion to ``rates``, rounded by largest remainder so the parts sum to it."""
    exact = [total * r / sum(rates) for r in rates]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(rates)), key=lambda i: (parts[i] - exact[i], i))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


@register_task("mixture")
class Mixture(Task):
    """Training records of several seq2seq tasks mixed by rate; val and test from one of them.

    Args:
        tasks: Entries ``{task, options, prefix, suffix, rate}``: a registered seq2seq task and its
            options, the text written before (``prefix``) and after (``suffix``) each of its inputs
            (the model's only way to tell the tasks apart when their inputs look alike), and its
            relative share of the training split (default 1). A mapping ``{label: entry}`` or a list
            of entries.
        evaluate: The label of the entry whose records make the val and test splits (a list
            entry's label is its task name); needed when there are several entries.
    """

    kind: ClassVar[TaskKind] = "seq2seq"

    def __init__(self, tasks: dict[str, Any] | list[Any] | None = None, evaluate: str | None = None):
        if isinstance(tasks, dict) and tasks and all(isinstance(k, str) for k in tasks):
            entries = [_entry(i, label, spec) for i, (label, spec) in enumerate(tasks.items())]
        elif isinstance(tasks, list) and tasks:
            entries = [_entry(i, None, spec) for i, spec in enumerate(tasks)]
        else:
            raise ConfigError(
                f"mixture tasks={tasks!r}: give a mapping {{label: {{task, options, prefix, suffix, rate}}}}, "
                "e.g. {histogram: {prefix: 'histogram: '}, copy: {prefix: 'copy: '}}, and evaluate: histogram"
            )
        labels = [e.label for e in entries]
        if len(set(labels)) != len(labels):
            raise ConfigError(
                "mixture lists the task "
                f"{next(x for x in labels if labels.count(x) > 1)!r} twice; give each entry its own label "
                "(tasks: {short: {task: copy, ...}, long: {task: copy, ...}})"
            )
        self.entries = sorted(entries, key=lambda e: e.label)  # order-free: see the module doc
        labels = sorted(labels)
        if evaluate is None and len(labels) == 1:
            evaluate = labels[0]
        if evaluate not in labels:
            raise ConfigError(
                f"mixture evaluate={evaluate!r}: name the entry whose records make val and test, one of: "
                f"{', '.join(labels)}"
            )
        self.evaluate = evaluate
        self._evaluated = labels.index(evaluate)

    @property
    def evaluated_task(self) -> Task:
        return self.entries[self._evaluated].task

    def options(self) -> dict[str, Any]:
        return {"tasks": {e.label: e.as_option() for e in self.entries}, "evaluate": self.evaluate}

    def alphabet(self) -> str | None:
        parts = [e.task.alphabet() for e in self.entries]
        if any(p is None for p in parts):
            return None
        return "".join(sorted(set("".join(parts)) | set("".join(e.prefix + e.suffix for e in self.entries))))

    def generate(self, n: int, seed: int) -> list[Pair]:
        """``n`` training records of the mixture (each entry's share, prefixed), shuffled with ``seed``."""
        out: list[Pair] = []
        for entry, k in zip(self.entries, shares(n, [e.rate for e in self.entries]), strict=True):
            out += entry.marked(entry.task.generate(k, self._seed(seed, entry)))
        random.Random(seed).shuffle(out)
        return out

    def draw_splits(self, sizes: dict[str, int], seed: int) -> dict[str, list[Record]]:
        """Train mixes every entry by rate; val and test come from the evaluated entry alone.

        The evaluated entry's train share, val and test are drawn together, so they are disjoint as
        in a plain task; helper records equal to a val/test record are dropped (they can only occur
        when a helper shares the evaluated entry's task and prefix).
        """
        parts = shares(sizes["train"], [e.rate for e in self.entries])
        held = sizes["val"] + sizes["test"]
        ev = self.entries[self._evaluated]
        drawn = parts[self._evaluated] + held
        own = ev.marked(_draw_unique(ev.task, drawn, self._seed(seed, ev))) if drawn else []
        cut = parts[self._evaluated]
        val, test = own[cut : cut + sizes["val"]], own[cut + sizes["val"] :]
        heldout = {r.key() for r in val + test}
        train = own[:cut]
        for i, entry in enumerate(self.entries):
            if i == self._evaluated or parts[i] == 0:
                continue
            drawn = entry.marked(_draw_unique(entry.task, parts[i] + held, self._seed(seed, entry)))
            train += [r for r in drawn if r.key() not in heldout][: parts[i]]
        random.Random(seed).shuffle(train)
        return {"train": train, "val": val, "test": test}

    def _seed(self, seed: int, entry: _Entry) -> int:
        # each entry's own stream, from its label; the evaluated entry keeps `seed`, so its val/test
        # are what its plain task would draw
        if entry is self.entries[self._evaluated]:
            return seed
        return random.Random(f"{seed}/{entry.label}").randrange(2**31)
