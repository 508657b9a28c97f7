"""Classification tasks (for EncT5): synthetic string properties and labelled CSV/TSV/JSONL files.

Records are :class:`~t5lab.tasks.base.Labelled` ``(text, label)``: ``label`` is a class id for
single-label tasks, the sorted list of positive class ids for multi-label tasks and a ``float`` for
regression. Every task exposes ``num_labels``, ``problem_type`` and ``label_names`` (the names the
ids stand for, in id order), which is what ``EncT5Config(num_labels=..., problem_type=...,
id2label=...)`` needs.

Synthetic tasks (input -> label):

- ``parity``: ``0110 -> 0`` ("even"): is the number of ``1``s odd?
- ``majority``: ``abbab -> 1`` ("b"): the most frequent symbol (inputs with a tie are redrawn)
- ``is_sorted``: ``abbd -> 1`` ("sorted"): are the symbols in non-decreasing alphabet order?
  Half of the inputs are drawn sorted, so the classes are balanced.
- ``contains`` (multi-label): ``cab -> [0, 1, 2]``: which symbols occur
- ``count`` (regression): ``abca -> 2.0``: occurrences of ``symbol`` (default the first symbol)
- ``digit_sum`` (regression): ``1902 -> 12.0``: the sum of the digits
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from t5lab.errors import ConfigError
from t5lab.tasks.base import PROBLEM_TYPES, ClassificationTask, Labelled, ProblemType, register_task
from t5lab.tasks.hf import load_hf_rows
from t5lab.tasks.synthetic import DEFAULT_ALPHABET, _check_alphabet, _check_lengths, _count_strings


class SyntheticClassification(ClassificationTask):
    """Base of the synthetic classification tasks: random strings over ``alphabet``."""

    default_alphabet: ClassVar[str] = DEFAULT_ALPHABET

    def __init__(self, min_len: int = 4, max_len: int = 8, alphabet: str | None = None):
        alphabet = self.default_alphabet if alphabet is None else alphabet
        _check_lengths(min_len, max_len)
        _check_alphabet(alphabet)
        self.min_len = min_len
        self.max_len = max_len
        self.alphabet_ = alphabet

    def options(self) -> dict:
        return {"min_len": self.min_len, "max_len": self.max_len, "alphabet": self.alphabet_}

    def draw_text(self, rng: random.Random) -> str:
        """One random input."""
        length = rng.randint(self.min_len, self.max_len)
        return "".join(rng.choice(self.alphabet_) for _ in range(length))

    def label_of(self, text: str) -> int | float | list[int]:
        """The label of ``text`` (a pure function, checked by hand in the tests)."""
        raise NotImplementedError

    def generate(self, n: int, seed: int) -> list[Labelled]:
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            text = self.draw_text(rng)
            out.append(Labelled(text, self.label_of(text)))
        return out

    def space_size(self) -> int | None:
        return _count_strings(len(self.alphabet_), self.min_len, self.max_len)

    def alphabet(self) -> str:
        return "".join(sorted(self.alphabet_))


@register_task("parity")
class Parity(SyntheticClassification):
    """Is the number of ``1``s odd? ``0110 -> 0`` ("even"), ``0111 -> 1`` ("odd")."""

    default_alphabet: ClassVar[str] = "01"
    label_names = ["even", "odd"]

    # up to 16 bits: 2^17 - 16 distinct inputs, room for the default 2000/200/200 splits
    def __init__(self, min_len: int = 4, max_len: int = 16):
        super().__init__(min_len, max_len, "01")

    def options(self) -> dict:
        return {"min_len": self.min_len, "max_len": self.max_len}

    def label_of(self, text: str) -> int:
        return text.count("1") % 2


@register_task("majority")
class Majority(SyntheticClassification):
    """The most frequent symbol: ``abbab -> 1`` (label name ``"b"``). Inputs with a tie are redrawn."""

    default_alphabet: ClassVar[str] = "ab"

    def __init__(self, min_len: int = 3, max_len: int = 15, alphabet: str | None = None):
        super().__init__(min_len, max_len, alphabet)
        if len(self.alphabet_) < 2:
            raise ConfigError(f"majority needs at least two symbols, got alphabet={self.alphabet_!r}")
        self.label_names = list(self.alphabet_)

    def draw_text(self, rng: random.Random) -> str:
        while True:  # rejection sampling: a tie has no label
            text = super().draw_text(rng)
            top = Counter(text).most_common(2)
            if len(top) == 1 or top[0][1] > top[1][1]:
                return text

    def label_of(self, text: str) -> int:
        counts = Counter(text)
        best = max(counts.values())
        winners = [c for c in self.alphabet_ if counts[c] == best]
        if len(winners) != 1:
            raise ValueError(f"{text!r} has a tie between {winners}; majority is undefined")
        return self.alphabet_.index(winners[0])

    def space_size(self) -> int | None:
        return None  # ties are excluded; never the bottleneck for sensible sizes


@register_task("is_sorted")
class IsSorted(SyntheticClassification):
    """Are the symbols in non-decreasing alphabet order? ``abbd -> 1``, ``bad -> 0``.

    Half of the inputs are drawn sorted (a random draw, then sorted), so both classes are common.
    """

    label_names = ["unsorted", "sorted"]

    def draw_text(self, rng: random.Random) -> str:
        text = super().draw_text(rng)
        if rng.random() < 0.5:
            rank = {c: i for i, c in enumerate(self.alphabet_)}
            text = "".join(sorted(text, key=rank.__getitem__))
        return text

    def label_of(self, text: str) -> int:
        rank = [self.alphabet_.index(c) for c in text]
        return int(all(a <= b for a, b in zip(rank, rank[1:])))


@register_task("contains")
class Contains(SyntheticClassification):
    """Multi-label: which symbols occur. ``cab -> [0, 1, 2]`` (names ``a``, ``b``, ``c``)."""

    problem_type: ProblemType = "multi_label_classification"

    def __init__(self, min_len: int = 2, max_len: int = 8, alphabet: str | None = None):
        super().__init__(min_len, max_len, alphabet)
        self.label_names = list(self.alphabet_)

    def label_of(self, text: str) -> list[int]:
        return sorted({self.alphabet_.index(c) for c in text})


@register_task("count")
class Count(SyntheticClassification):
    """Regression: how often ``symbol`` occurs. ``abca -> 2.0`` for ``symbol="a"``."""

    problem_type: ProblemType = "regression"

    def __init__(self, min_len: int = 4, max_len: int = 8, alphabet: str | None = None, symbol: str | None = None):
        super().__init__(min_len, max_len, alphabet)
        symbol = self.alphabet_[0] if symbol is None else symbol
        if symbol not in self.alphabet_ or len(symbol) != 1:
            raise ConfigError(f"symbol={symbol!r} must be one character of alphabet={self.alphabet_!r}")
        self.symbol = symbol
        self.label_names = [f"count_{symbol}"]

    def options(self) -> dict:
        return {**super().options(), "symbol": self.symbol}

    def label_of(self, text: str) -> float:
        return float(text.count(self.symbol))


@register_task("digit_sum")
class DigitSum(SyntheticClassification):
    """Regression: the sum of the digits. ``1902 -> 12.0``."""

    problem_type: ProblemType = "regression"
    default_alphabet: ClassVar[str] = "0123456789"
    label_names = ["digit_sum"]

    def __init__(self, min_len: int = 2, max_len: int = 6):
        super().__init__(min_len, max_len, "0123456789")

    def options(self) -> dict:
        return {"min_len": self.min_len, "max_len": self.max_len}

    def label_of(self, text: str) -> float:
        return float(sum(int(c) for c in text))


# ------------------------------------------------------------------------------------------------
# Labelled files
# ------------------------------------------------------------------------------------------------


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` pairs of a .csv / .tsv (header row) or .jsonl (one object per line) file."""
    ext = path.suffix.lower()
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8", newline="") as f:
        if ext == ".jsonl":
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{path}:{lineno}: not valid JSON ({err.msg}); write one object per line") from None
                if not isinstance(obj, dict):
                    raise ConfigError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
                rows.append((lineno, obj))
        else:
            reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
            for row in reader:
                rows.append((reader.line_num, row))
    return rows


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, str) and v.strip().lstrip("-").isdigit()


def _is_float(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return True
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


@register_task("labelled_file", extensions=(".csv", ".tsv", ".jsonl"))
class LabelledFile(ClassificationTask):
    """Labelled examples from a .csv, .tsv (with a header row) or .jsonl file.

    The problem type is inferred unless given: a list label (JSONL) or ``label_separator`` means
    multi-label; labels that are all integers mean single-label with those ids; labels that are
    numbers but not all integers mean regression; other labels are class names, mapped to ids in
    sorted order (the mapping is in ``label_names``). Pass ``label_names`` to fix names and order.

    Args:
        path: The file.
        text_column: Column (CSV/TSV) or field (JSONL) holding the text.
        label_column: Column or field holding the label.
        problem_type: ``single_label_classification``, ``multi_label_classification`` or
            ``regression``; inferred when None.
        label_separator: Splits a string label into several (multi-label), e.g. ``"|"``.
        label_names: Class names in id order; labels must then be among them.
    """

    def __init__(
        self,
        path: str,
        text_column: str = "text",
        label_column: str = "label",
        problem_type: str | None = None,
        label_separator: str | None = None,
        label_names: list[str] | None = None,
    ):
        self.path = str(path)
        p = Path(self.path)
        if not p.is_file():
            raise ConfigError(f"labelled file {self.path} does not exist; check the path")
        if p.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
            raise ConfigError(f"{self.path}: labelled files must be .csv, .tsv or .jsonl")
        if problem_type is not None and problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type={problem_type!r}; use one of {', '.join(PROBLEM_TYPES)}")
        if label_separator is not None and problem_type not in (None, "multi_label_classification"):
            raise ConfigError("label_separator is for multi-label files; drop it or set problem_type=multi_label_classification")
        self.text_column = text_column
        self.label_column = label_column
        self.label_separator = label_separator
        self.name = p.name
        self._records, self.problem_type, self.label_names = self._parse(
            _read_rows(p), str(p), problem_type, label_names
        )

    def options(self) -> dict:
        return {
            "path": self.path,
            "text_column": self.text_column,
            "label_column": self.label_column,
            "problem_type": self.problem_type,
            "label_separator": self.label_separator,
            "label_names": self.label_names,
        }

    def _parse(
        self, rows: list[tuple[int, dict[str, Any]]], p: str, problem_type: str | None, label_names: list[str] | None
    ) -> tuple[list[Labelled], ProblemType, list[str]]:
        """Records, problem type and label names from ``(line number, row)`` pairs read from ``p``."""
        if not rows:
            raise ConfigError(f"{p} has no rows; a labelled file needs a header and at least one example")
        texts, raw = [], []
        for lineno, row in rows:
            for col in (self.text_column, self.label_column):
                if col not in row or row[col] is None:
                    raise ConfigError(
                        f"{p}:{lineno} has no column {col!r}; its columns are {', '.join(map(str, row))} "
                        "(set text_column= / label_column=)"
                    )
            text = row[self.text_column]
            if not isinstance(text, str):
                raise ConfigError(f"{p}:{lineno}: {self.text_column!r} must be a string, got {text!r}")
            label = row[self.label_column]
            if self.label_separator is not None and isinstance(label, str):
                label = [s.strip() for s in label.split(self.label_separator) if s.strip()]
            texts.append(text)
            raw.append((lineno, label))

        if problem_type is None:
            if self.label_separator is not None or any(isinstance(v, list) for _, v in raw):
                problem_type = "multi_label_classification"
            elif all(_is_int(v) for _, v in raw):
                problem_type = "single_label_classification"
            elif all(_is_float(v) for _, v in raw) and any(not isinstance(v, str) or v.strip() for _, v in raw):
                problem_type = "regression"
            else:
                problem_type = "single_label_classification"

        if problem_type == "regression":
            labels: list[Any] = []
            for lineno, v in raw:
                if not _is_float(v) or not math.isfinite(float(v)):
                    raise ConfigError(f"{p}:{lineno}: regression label {v!r} is not a finite number")
                labels.append(float(v))
            names = label_names or [self.label_column]
        elif problem_type == "multi_label_classification":
            lists = []
            for lineno, v in raw:
                items = v if isinstance(v, list) else ([] if v in ("", None) else [v])
                if any(isinstance(x, list | dict) or x is None for x in items):
                    raise ConfigError(f"{p}:{lineno}: multi-label {v!r} must be a flat list of names or ids")
                lists.append((lineno, [str(x) if not isinstance(x, int) else x for x in items]))
            names, to_id = self._label_map([x for _, items in lists for x in items], label_names, p)
            labels = [sorted({to_id(x, lineno) for x in items}) for lineno, items in lists]
        else:
            names, to_id = self._label_map([v for _, v in raw], label_names, p)
            labels = [to_id(v, lineno) for lineno, v in raw]
        return [Labelled(t, y) for t, y in zip(texts, labels)], problem_type, names

    def _label_map(self, values: list[Any], label_names: list[str] | None, p: str):
        """Names in id order and a value -> id function (ints are ids; strings are names)."""
        if label_names is not None:
            names = [str(n) for n in label_names]
            index = {n: i for i, n in enumerate(names)}
        elif values and all(_is_int(v) for v in values):
            ids = [int(v) for v in values]
            if min(ids) < 0:
                raise ConfigError(f"{p}: integer labels must be class ids >= 0, found {min(ids)}")
            names = [str(i) for i in range(max(ids) + 1)]
            index = {n: i for i, n in enumerate(names)}
        else:
            names = sorted({str(v) for v in values})
            index = {n: i for i, n in enumerate(names)}

        def to_id(v: Any, lineno: int) -> int:
            key = str(int(v)) if _is_int(v) and label_names is None else str(v)
            if key not in index and _is_int(v) and 0 <= int(v) < len(names):
                return int(v)  # an id into the given label_names
            if key not in index:
                raise ConfigError(f"{p}:{lineno}: label {v!r} is not one of label_names {names}")
            return index[key]

        return names, to_id

    def load(self) -> list[Labelled]:
        return list(self._records)

    def alphabet(self) -> str:
        return "".join(sorted({c for r in self._records for c in r.text}))

    @classmethod
    def for_path(cls, path: str, options: dict[str, Any]) -> str:
        """A .jsonl file whose first record has no label field is a text corpus (the registered
        ``text_file`` task), not a labelled file."""
        p = Path(path)
        if p.suffix.lower() == ".jsonl" and p.is_file():
            rows = _read_rows(p)
            if rows and "label_column" not in options and "label" not in rows[0][1]:
                return "text_file"
        return "labelled_file"


@register_task("hf_labelled")
class HFLabelled(LabelledFile):
    """A labelled Hugging Face ``datasets`` split: ``hf:NAME[/CONFIG]`` with ``label_column`` set.

    Needs the optional ``datasets`` package and the hub (or its cache); labels are parsed like a
    labelled file's (ids, names, lists or numbers). Example: ``get_task("hf:glue/sst2",
    text_column="sentence", label_column="label", split="train")``.
    """

    def __init__(
        self,
        dataset: str,
        split: str = "train",
        text_column: str = "text",
        label_column: str = "label",
        problem_type: str | None = None,
        label_separator: str | None = None,
        label_names: list[str] | None = None,
        limit: int | None = None,
    ):
        if problem_type is not None and problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type={problem_type!r}; use one of {', '.join(PROBLEM_TYPES)}")
        self.dataset, self.split, self.limit = dataset, split, limit
        self.path = f"hf:{dataset}"
        self.text_column = text_column
        self.label_column = label_column
        self.label_separator = label_separator
        rows = list(enumerate(load_hf_rows(dataset, split, limit)))
        self._records, self.problem_type, self.label_names = self._parse(rows, self.path, problem_type, label_names)

    def options(self) -> dict:
        return {**super().options(), "dataset": self.dataset, "split": self.split, "limit": self.limit}
