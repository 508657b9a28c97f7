"""Looking tasks up (by name, file extension or prefix) and building their splits.

Importing this module imports the built-in task families, which register themselves with
:func:`t5lab.tasks.base.register_task`; ``base`` never imports its subclasses.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from t5lab.errors import ConfigError, T5LabError
from t5lab.tasks import classification, synthetic, text  # noqa: F401  (register the built-in tasks)
from t5lab.tasks.base import (
    _BY_EXTENSION,
    _BY_PREFIX,
    _REGISTRY,
    SPLITS,
    Record,
    Size,
    Task,
    check_sizes,
    dedupe,
)


def list_tasks() -> list[str]:
    """Sorted names of every registered task."""
    return sorted(_REGISTRY)


def task_class(name: str) -> type[Task]:
    """The registered class for ``name`` (one-line error listing the known names otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(_REGISTRY))} "
            "(or give a path to a .csv/.tsv/.jsonl/.txt file)"
        ) from None


def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or Path(name).suffix.lower() in _BY_EXTENSION


def get_task(name_or_path: str | Task, **options: Any) -> Task:
    """Build a task from its registered name, or from a data file path.

    Args:
        name_or_path: A registered name (``"copy"``), or a path whose extension picks the file
            task (``.csv``/``.tsv``/``.jsonl`` classification, ``.txt`` text; ``.jsonl`` files
            without a label column are text). A :class:`Task` instance is returned as is.
        **options: Constructor options of the task (``min_len=4``, ``label_column="y"``, ...).

    Raises:
        ConfigError: Unknown name, unknown option, or a file with an unsupported extension.
    """
    if isinstance(name_or_path, Task):
        if options:
            raise ConfigError(f"options {sorted(options)} given with an already built task {name_or_path!r}")
        return name_or_path
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ConfigError(f"task must be a task name or a file path, got {name_or_path!r}")
    name = name_or_path
    for prefix, registered in _BY_PREFIX.items():
        if name.startswith(prefix):
            cls = _REGISTRY[registered]
            first = [k for k in inspect.signature(cls.__init__).parameters if k != "self"][0]
            cls = _picked(cls, name, options)
            return _construct(cls, {first: name[len(prefix) :], **options})
    if name not in _REGISTRY and _looks_like_path(name):
        ext = Path(name).suffix.lower()
        if ext not in _BY_EXTENSION:
            raise ConfigError(
                f"task file {name}: unsupported extension {ext or '(none)'!r}; "
                f"use one of {', '.join(sorted(_BY_EXTENSION))}"
            )
        cls = _REGISTRY[_BY_EXTENSION[ext]]
        cls = _picked(cls, name, options)
        return _construct(cls, {"path": name, **options})
    return _construct(task_class(name), options)


def _picked(cls: type[Task], name: str, options: dict[str, Any]) -> type[Task]:
    """The class a file or prefix family picks by content: its ``for_path`` names a registered task
    (a name, not a class, so sibling families need not import each other)."""
    resolver = getattr(cls, "for_path", None)
    return _REGISTRY[resolver(name, options)] if resolver is not None else cls


def _construct(cls: type[Task], options: dict[str, Any]) -> Task:
    params = inspect.signature(cls.__init__).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = [k for k, p in params.items() if k != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(options) - set(allowed))
    if unknown and not accepts_any:
        raise ConfigError(
            f"task {cls.name!r} has no option {unknown[0]!r}; its options are: {', '.join(allowed) or '(none)'}"
        )
    try:
        return cls(**options)
    except T5LabError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"task {cls.name!r}: {err}") from err




def build_splits(
    task: Task | str | Any,
    train: Size = None,
    val: Size = 0,
    test: Size = 0,
    seed: int = 0,
    **options: Any,
) -> dict[str, list[Record]]:
    """Deterministic, disjoint ``train``/``val``/``test`` record lists.

    For generated tasks every size is a count; records are drawn from ``seed``, deduplicated and
    dealt out in order, so the three splits never share a record. For file and corpus tasks a
    size is a count, a fraction in (0, 1) of the deduplicated records, or ``None`` for "all the
    rest" (at most one split); records are shuffled with ``seed`` before cutting.

    Args:
        task: A :class:`Task`, a task name/path (built with ``options``), or a config object
            with attributes ``task``, ``train``, ``val``, ``test``, ``seed`` and optionally
            ``options``/``task_options`` (the data section of an experiment config).
        train: Size of the training split.
        val: Size of the validation split.
        test: Size of the test split.
        seed: Seed of every random choice made here and in the task.
        **options: Task options, when ``task`` is a name or path.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.

    Raises:
        ConfigError: Bad sizes, or more records asked for than the task or file can provide.
    """
    if not isinstance(task, Task | str):  # a data config object
        cfg = task
        task = cfg.task
        opts = getattr(cfg, "options", None) or getattr(cfg, "task_options", None) or {}
        options = {**dict(opts), **options}
        train, val, test = getattr(cfg, "train", train), getattr(cfg, "val", val), getattr(cfg, "test", test)
        seed = getattr(cfg, "seed", seed)
    task = get_task(task, **options)
    sizes = {"train": train, "val": val, "test": test}
    check_sizes(task, train, val, test)
    custom = task.draw_splits(sizes, seed)
    if custom is not None:
        return custom
    if task.is_generative:
        records = _draw_unique(task, sum(sizes.values()), seed)
        counts = sizes
    else:
        records = dedupe(task.load())
        random.Random(seed).shuffle(records)
        counts = _resolve_counts(task, sizes, len(records))
    out: dict[str, list[Record]] = {}
    start = 0
    for split in SPLITS:
        out[split] = records[start : start + counts[split]]
        start += counts[split]
    return out


def _draw_unique(task: Task, total: int, seed: int) -> list[Record]:
    records: list[Record] = []
    seen: set[Hashable] = set()
    # Draw in rounds with derived seeds until there are enough distinct records. The first round
    # uses `seed` itself, so for a roomy task build_splits(...)["train"] starts like generate(n, seed).
    rng = random.Random(seed)
    round_seed = seed
    for _ in range(50):
        # every round draws `total` again: near a small space's size the last few distinct records
        # need many draws (coupon collector), and a short round would run out of rounds first
        for r in task.generate(max(total, 16), round_seed):
            k = r.key()
            if k not in seen:
                seen.add(k)
                records.append(r)
                if len(records) == total:
                    return records
        round_seed = rng.randrange(2**31)
    raise ConfigError(
        f"task {task.name!r} produced only {len(records)} distinct examples of the {total} asked for "
        "train+val+test; lower the sizes or widen the task (longer max_len, larger alphabet)"
    )


def _resolve_counts(task: Task, sizes: dict[str, Size], n: int) -> dict[str, int]:
    if n == 0:
        raise ConfigError(f"task {task.name!r} has no records; check the file and its column names")
    rest = [s for s, v in sizes.items() if v is None]
    if len(rest) > 1:
        raise ConfigError(f"only one split can take 'the rest' (None); {' and '.join(rest)} both do")
    counts = {s: (int(v * n) if isinstance(v, float) else v) for s, v in sizes.items() if v is not None}
    used = sum(counts.values())
    if used > n:
        raise ConfigError(
            f"task {task.name!r} has {n} distinct records but the splits ask for {used} "
            f"({', '.join(f'{s}={v}' for s, v in sizes.items())}); lower the sizes"
        )
    for s in rest:
        counts[s] = n - used
    return counts
