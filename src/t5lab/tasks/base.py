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
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from t5lab.errors import ConfigError

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

    @property
    def evaluated_task(self) -> Task:
        """The task whose records the val and test splits hold: this one (a mixture's evaluated entry)."""
        return self

    def draw_splits(self, sizes: dict[str, Any], seed: int) -> dict[str, list[Record]] | None:
        """The splits, for a task whose splits are not cuts of one record stream (a mixture, whose
        val and test come from one of its tasks); ``None`` (the default): :func:`build_splits` cuts them."""
        return None

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




def check_sizes(task: Task, train: Size, val: Size, test: Size) -> None:
    """Raise a one-line ConfigError for split sizes ``task`` cannot provide, before drawing anything.

    Checks each size's type and, for a generated task with a known :meth:`Task.space_size`, that
    train + val + test distinct records exist (file tasks are checked when they are read).
    """
    sizes = {"train": train, "val": val, "test": test}
    for split, size in sizes.items():
        _check_size(split, size, task.is_generative)
    if task.is_generative:
        space = task.space_size()
        total = sum(sizes.values())
        if space is not None and total > space:
            raise ConfigError(
                f"task {task.name!r} has only {space} distinct examples with these options but {total} were asked "
                "for train+val+test; lower the sizes or widen the task (longer max_len, larger alphabet)"
            )
