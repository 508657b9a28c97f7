"""Task records, the task registry and deterministic train/val/test splits.

A *task* produces plain records; it knows nothing of tokenizers or models
(``t5lab.formulation`` turns records into batches per model variant):

- ``seq2seq`` tasks yield :class:`Pair` ``(input, target)`` strings;
- ``classification`` tasks yield :class:`Labelled` ``(text, label)`` records;
- ``text`` tasks yield ``Pair("", text)`` (a causal-LM sample) that a text objective may re-cut.

Generative tasks implement ``generate(n, seed)``; file/corpus tasks implement ``load()``.
:func:`build_splits` turns either into disjoint, seed-deterministic ``train``/``val``/``test`` lists.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from t5lab.errors import ConfigError, T5LabError

TaskKind = Literal["seq2seq", "classification", "text"]
ProblemType = Literal["single_label_classification", "multi_label_classification", "regression"]
KINDS: tuple[str, ...] = ("seq2seq", "classification", "text")
PROBLEM_TYPES: tuple[str, ...] = ("single_label_classification", "multi_label_classification", "regression")


@dataclass(frozen=True)
class Pair:
    """A sequence-to-sequence record: the model reads ``input`` and must produce ``target``."""

    input: str
    target: str

    def key(self) -> Hashable:
        """Identity used to deduplicate records and keep splits disjoint."""
        return (self.input, self.target)


@dataclass(frozen=True)
class Labelled:
    """A classification record.

    ``label`` is a class id (``int``) for single-label tasks, a list of class ids (the positive
    classes) for multi-label tasks and a ``float`` for regression.
    """

    text: str
    label: int | float | list[int]

    def key(self) -> Hashable:
        # Two records with the same text are the same example even if a file labels them twice:
        # keeping them apart is what "disjoint splits" means for a classifier.
        return self.text


Record = Pair | Labelled


class Task:
    """Base class of every task.

    Subclasses set ``kind`` and implement either :meth:`generate` (synthetic tasks, deterministic
    in ``seed``) or :meth:`load` (file and corpus tasks). Constructor keyword arguments are the
    task's options: :func:`get_task` checks option names against the constructor signature.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[TaskKind] = "seq2seq"

    # -- data --------------------------------------------------------------------------------
    def generate(self, n: int, seed: int) -> list[Record]:
        """Return ``n`` freshly drawn records, the same ones for the same ``seed``."""
        raise NotImplementedError(f"task {self.name!r} is read from a file: use load(), not generate()")

    def load(self) -> list[Record]:
        """Return every record of a file or corpus task, in file order."""
        raise NotImplementedError(f"task {self.name!r} is generated: use generate(n, seed), not load()")

    @property
    def is_generative(self) -> bool:
        """True when the task draws records with :meth:`generate` (else it has a fixed :meth:`load`)."""
        return type(self).generate is not Task.generate

    def space_size(self) -> int | None:
        """Number of distinct records the task can generate, when it is small enough to matter.

        :func:`build_splits` uses it to refuse impossible sizes up front. ``None`` means
        "large or unknown".
        """
        return None

    # -- vocabulary ----------------------------------------------------------------------------
    def alphabet(self) -> str | None:
        """Every character an input or target can contain (for the char tokenizer); None for open text."""
        return None

    def options(self) -> dict[str, Any]:
        """The constructor options this task was built with (for logging and run configs)."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self" and hasattr(self, k)}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


class ClassificationTask(Task):
    """Base of classification tasks: records are :class:`Labelled`.

    Subclasses set ``problem_type`` and ``label_names`` (one name per class; for regression a
    single name such as ``["value"]``). ``num_labels`` follows from them: the number of classes,
    or 1 for regression (the HF convention for ``AutoModelForSequenceClassification``).
    """

    kind: ClassVar[TaskKind] = "classification"
    problem_type: ProblemType = "single_label_classification"
    label_names: list[str]

    @property
    def num_labels(self) -> int:
        """Size of the classifier's output layer."""
        return 1 if self.problem_type == "regression" else len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        """``{id: name}`` as HF model configs store it."""
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        """``{name: id}`` as HF model configs store it."""
        return {name: i for i, name in enumerate(self.label_names)}


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Task]] = {}
# file extension -> task name used when a path is given instead of a name (filled by file tasks)
_BY_EXTENSION: dict[str, str] = {}
# name prefix ("hf:") -> task name; the rest of the name is the task's first constructor argument
_BY_PREFIX: dict[str, str] = {}

T = TypeVar("T", bound=type[Task])


def register_task(name: str, *, extensions: Sequence[str] = (), prefix: str | None = None) -> Callable[[T], T]:
    """Class decorator that registers a :class:`Task` subclass under ``name``.

    Args:
        name: The name used in configs and :func:`get_task`.
        extensions: File extensions (``".csv"``) for which a path given as task name picks this task.
        prefix: A task-name prefix (``"hf:"``) that picks this task; the rest of the name becomes
            the constructor's first argument (``hf:wikitext`` -> ``HFText("wikitext")``).

    Raises:
        ConfigError: If the name is taken by another class, or the class is not a Task.
    """

    def decorate(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise ConfigError(f"@register_task({name!r}) decorates {cls!r}; it must decorate a Task subclass")
        if cls.kind not in KINDS:
            raise ConfigError(f"task {name!r} has kind={cls.kind!r}; use one of {', '.join(KINDS)}")
        old = _REGISTRY.get(name)
        # Re-registering the very same class (module re-imported, e.g. by --import) is harmless.
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(
                f"task name {name!r} is already registered by {old.__module__}.{old.__qualname__}; "
                "choose another name"
            )
        _REGISTRY[name] = cls
        if not cls.name:
            cls.name = name
        for ext in extensions:
            _BY_EXTENSION[ext.lower()] = name
        if prefix:
            _BY_PREFIX[prefix] = name
        return cls

    return decorate


def _ensure_builtin_tasks() -> None:
    # Importing the families registers them; done lazily so `import t5lab.tasks.base` stays light.
    from t5lab.tasks import classification, synthetic, text  # noqa: F401


def list_tasks() -> list[str]:
    """Sorted names of every registered task."""
    _ensure_builtin_tasks()
    return sorted(_REGISTRY)


def task_class(name: str) -> type[Task]:
    """The registered class for ``name`` (one-line error listing the known names otherwise)."""
    _ensure_builtin_tasks()
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
    _ensure_builtin_tasks()
    name = name_or_path
    for prefix, registered in _BY_PREFIX.items():
        if name.startswith(prefix):
            cls = _REGISTRY[registered]
            first = [k for k in inspect.signature(cls.__init__).parameters if k != "self"][0]
            resolver = getattr(cls, "for_path", None)
            if resolver is not None:
                cls = resolver(name, options)
            return _construct(cls, {first: name[len(prefix) :], **options})
    if name not in _REGISTRY and _looks_like_path(name):
        ext = Path(name).suffix.lower()
        if ext not in _BY_EXTENSION:
            raise ConfigError(
                f"task file {name}: unsupported extension {ext or '(none)'!r}; "
                f"use one of {', '.join(sorted(_BY_EXTENSION))}"
            )
        cls = _REGISTRY[_BY_EXTENSION[ext]]
        resolver = getattr(cls, "for_path", None)  # a file family may pick a sibling class by content
        if resolver is not None:
            cls = resolver(name, options)
        return _construct(cls, {"path": name, **options})
    return _construct(task_class(name), options)


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


# ------------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------------

SPLITS: tuple[str, ...] = ("train", "val", "test")
Size = int | float | None


def dedupe(records: Sequence[Record]) -> list[Record]:
    """Drop repeated records (same :meth:`key`), keeping the first occurrence and the order."""
    seen: set[Hashable] = set()
    out = []
    for r in records:
        k = r.key()
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def _check_size(split: str, size: Size, generative: bool) -> None:
    if size is None:
        if generative:
            raise ConfigError(f"{split} size is missing; generated tasks need a count such as {split}=1000")
        return
    if isinstance(size, bool) or not isinstance(size, int | float):
        raise ConfigError(f"{split} size must be a count (int) or a fraction in (0, 1), got {size!r}")
    if isinstance(size, float):
        if generative:
            raise ConfigError(
                f"{split}={size}: fractions only apply to file and corpus tasks; give a count for generated tasks"
            )
        if not 0.0 < size < 1.0:
            raise ConfigError(f"{split}={size}: a fraction must lie strictly between 0 and 1")
    elif size < 0:
        raise ConfigError(f"{split}={size}: a count cannot be negative")


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
    for split, size in sizes.items():
        _check_size(split, size, task.is_generative)
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
    space = task.space_size()
    if space is not None and total > space:
        raise ConfigError(
            f"task {task.name!r} has only {space} distinct examples with these options but {total} were asked "
            "for train+val+test; lower the sizes or widen the task (longer max_len, larger alphabet)"
        )
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
