"""Synthetic sequence-to-sequence tasks, drawn deterministically from a seed.

Every task draws an input string and computes its target with :meth:`SyntheticSeq2Seq.solve`, a
pure function the tests check by hand. Most tasks come from the RASP line of work on what
transformers can compute (Weiss et al., 2021, "Thinking Like Transformers", sec. 3-4: reverse,
histogram, double histogram, sort); ``maskedcopy`` is the *selective copying* task of Gu & Dao
(2023, "Mamba", sec. 3.1) and ``long_addition`` the multi-digit addition of Nogueira et al. (2021,
"Investigating the limitations of transformers with simple arithmetic tasks").

Examples (input -> target):

- ``copy``: ``abca -> abca`` (the input itself)
- ``reverse``: ``abc -> cba`` (the input backwards)
- ``sort``: ``cabd -> abcd`` (the symbols in alphabet order)
- ``numbersort``: ``12 3 40 -> 3 12 40`` (numbers in increasing numeric order)
- ``histogram``: ``abca -> 2 1 1 2`` (per position: occurrences of that symbol)
- ``doublehistogram``: ``aabbc -> 2 2 2 2 1`` (per position: how many distinct symbols occur as
  often as this one)
- ``long_addition``: ``123+989 -> 1112`` (the decimal sum)
- ``maskedcopy``: ``a__b_c -> abc`` (the symbols without the mask characters)
"""

from __future__ import annotations

import random
import string
from collections import Counter
from typing import ClassVar

from t5lab.errors import ConfigError
from t5lab.tasks.base import Pair, Task, TaskKind, register_task

DEFAULT_ALPHABET = "abcdefghij"
# The 62 symbols of the original (seed) harness: a-z A-Z 0-9, and its letters-only alphabet.
SEED_ALPHANUMERIC = string.ascii_lowercase + string.ascii_uppercase + string.digits
SEED_LETTERS = string.ascii_lowercase + string.ascii_uppercase
# A space-count above this is reported as "large" (None) rather than computed exactly.
_LARGE = 10**12


def _check_lengths(min_len: int, max_len: int, what: str = "len", smallest: int = 1) -> None:
    for name, v, low in ((f"min_{what}", min_len, smallest), (f"max_{what}", max_len, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            kind = "a positive integer" if low == 1 else f"an integer >= {low}"
            raise ConfigError(f"{name}={v!r}: must be {kind}")
    if min_len > max_len:
        raise ConfigError(f"min_{what}={min_len} > max_{what}={max_len}; make min_{what} <= max_{what}")


def _check_alphabet(alphabet: str, reserved: str = "") -> None:
    if not isinstance(alphabet, str) or not alphabet:
        raise ConfigError(f"alphabet={alphabet!r}: give a non-empty string of symbols such as 'abcdefghij'")
    if len(set(alphabet)) != len(alphabet):
        raise ConfigError(f"alphabet={alphabet!r} repeats a symbol; list each symbol once")
    clash = sorted(set(alphabet) & set(reserved))
    if clash:
        raise ConfigError(f"alphabet={alphabet!r} contains {clash[0]!r}, which this task uses as a separator")


def _resolve_preset(cls: type, preset: str | None, given: dict) -> dict:
    """The options of ``preset`` (``None``: the class defaults) with the options given explicitly on top.

    Presets are named option sets; ``seed`` reproduces the original harness's task definitions
    (issue "time to accuracy": copy/sort 0-60 of a-z A-Z 0-9, (double)histogram 10-80 letters,
    numbersort 0-30 three-digit numbers, long_addition 2-20 digit operands).
    """
    presets = getattr(cls, "presets", {})
    if preset is None:
        base = dict(cls.defaults)
    elif preset in presets:
        base = {**cls.defaults, **presets[preset]}
    else:
        known = ", ".join(sorted(presets)) or "none"
        raise ConfigError(f"preset={preset!r} is not a preset of this task; known presets: {known}")
    base.update({k: v for k, v in given.items() if v is not None})
    return base


def _count_strings(n_symbols: int, min_len: int, max_len: int) -> int | None:
    total = sum(n_symbols**length for length in range(min_len, max_len + 1))
    return total if total <= _LARGE else None


class SyntheticSeq2Seq(Task):
    """Base of the string-to-string tasks: random symbols from ``alphabet``, length in [min_len, max_len]."""

    kind: ClassVar[TaskKind] = "seq2seq"
    # characters the target may use besides the alphabet (digits, separators, ...)
    reserved: ClassVar[str] = ""
    defaults: ClassVar[dict] = {"min_len": 4, "max_len": 8, "alphabet": DEFAULT_ALPHABET}
    # named option sets (``data.options: {preset: seed}``); explicit options override them
    presets: ClassVar[dict[str, dict]] = {}
    # an empty input is a valid example (the seed harness draws copy/sort lengths from 0)
    allows_empty: ClassVar[bool] = False

    def __init__(
        self,
        min_len: int | None = None,
        max_len: int | None = None,
        alphabet: str | None = None,
        preset: str | None = None,
    ):
        opts = _resolve_preset(type(self), preset, {"min_len": min_len, "max_len": max_len, "alphabet": alphabet})
        min_len, max_len, alphabet = opts["min_len"], opts["max_len"], opts["alphabet"]
        _check_lengths(min_len, max_len, smallest=0 if self.allows_empty else 1)
        _check_alphabet(alphabet, self.reserved)
        self.min_len = min_len
        self.max_len = max_len
        self.alphabet_ = alphabet

    # `alphabet` is both an option and the Task.alphabet() method; the option lives in alphabet_.
    def options(self) -> dict:
        return {"min_len": self.min_len, "max_len": self.max_len, "alphabet": self.alphabet_}

    def solve(self, x: str) -> str:
        """The target for input ``x``."""
        raise NotImplementedError

    def draw_input(self, rng: random.Random) -> str:
        """One random input."""
        length = rng.randint(self.min_len, self.max_len)
        return "".join(rng.choice(self.alphabet_) for _ in range(length))

    def generate(self, n: int, seed: int) -> list[Pair]:
        """``n`` records drawn with ``random.Random(seed)`` (repeats possible; build_splits dedupes)."""
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            x = self.draw_input(rng)
            out.append(Pair(x, self.solve(x)))
        return out

    def space_size(self) -> int | None:
        return _count_strings(len(self.alphabet_), self.min_len, self.max_len)

    def alphabet(self) -> str:
        return "".join(sorted(set(self.alphabet_) | set(self.reserved)))


_SEED_STRINGS = {"seed": {"min_len": 0, "max_len": 60, "alphabet": SEED_ALPHANUMERIC}}
_SEED_HISTOGRAM = {"seed": {"min_len": 10, "max_len": 80, "alphabet": SEED_LETTERS}}


@register_task("copy")
class Copy(SyntheticSeq2Seq):
    """Copy the input: ``abca -> abca``."""

    presets: ClassVar[dict[str, dict]] = _SEED_STRINGS
    allows_empty: ClassVar[bool] = True

    def solve(self, x: str) -> str:
        return x


@register_task("reverse")
class Reverse(SyntheticSeq2Seq):
    """Reverse the input: ``abc -> cba``."""

    def solve(self, x: str) -> str:
        return x[::-1]


@register_task("sort")
class Sort(SyntheticSeq2Seq):
    """Sort the symbols by their position in the alphabet: ``cabd -> abcd``."""

    presets: ClassVar[dict[str, dict]] = _SEED_STRINGS
    allows_empty: ClassVar[bool] = True

    def solve(self, x: str) -> str:
        rank = {c: i for i, c in enumerate(self.alphabet_)}
        return "".join(sorted(x, key=rank.__getitem__))


@register_task("histogram")
class Histogram(SyntheticSeq2Seq):
    """For each position, how often its symbol occurs in the input (RASP ``hist``): ``abca -> 2 1 1 2``.

    Counts are written in decimal and separated by single spaces, so lengths above 9 work.
    """

    reserved: ClassVar[str] = string.digits + " "
    presets: ClassVar[dict[str, dict]] = _SEED_HISTOGRAM

    def solve(self, x: str) -> str:
        counts = Counter(x)
        return " ".join(str(counts[c]) for c in x)


@register_task("doublehistogram")
class DoubleHistogram(SyntheticSeq2Seq):
    """For each position, the number of distinct symbols whose count equals this symbol's count.

    RASP's "double histogram": ``aabbc`` has counts a=2, b=2, c=1, so ``aabbc -> 2 2 2 2 1``.
    """

    reserved: ClassVar[str] = string.digits + " "
    presets: ClassVar[dict[str, dict]] = _SEED_HISTOGRAM

    def solve(self, x: str) -> str:
        counts = Counter(x)
        same = Counter(counts.values())  # count value -> number of distinct symbols with it
        return " ".join(str(same[counts[c]]) for c in x)


@register_task("maskedcopy")
class MaskedCopy(SyntheticSeq2Seq):
    """Selective copying (Gu & Dao, 2023): copy the symbols, skipping the mask characters.

    The input is ``min_len..max_len`` symbols with ``1..max_masks`` mask characters inserted at
    random positions: ``a__b_c -> abc``.
    """

    def __init__(
        self,
        min_len: int | None = None,
        max_len: int | None = None,
        alphabet: str | None = None,
        mask_char: str = "_",
        max_masks: int = 8,
    ):
        if not isinstance(mask_char, str) or len(mask_char) != 1:
            raise ConfigError(f"mask_char={mask_char!r}: must be a single character")
        if isinstance(max_masks, bool) or not isinstance(max_masks, int) or max_masks < 1:
            raise ConfigError(f"max_masks={max_masks!r}: must be a positive integer")
        self.mask_char = mask_char
        self.max_masks = max_masks
        self.reserved = mask_char  # type: ignore[misc]  (per instance: the mask is configurable)
        super().__init__(min_len, max_len, alphabet)

    def options(self) -> dict:
        return {**super().options(), "mask_char": self.mask_char, "max_masks": self.max_masks}

    def draw_input(self, rng: random.Random) -> str:
        symbols = list(super().draw_input(rng))
        for _ in range(rng.randint(1, self.max_masks)):
            symbols.insert(rng.randint(0, len(symbols)), self.mask_char)
        return "".join(symbols)

    def solve(self, x: str) -> str:
        return x.replace(self.mask_char, "")

    def space_size(self) -> int | None:
        return None  # at least as large as copy's times the mask placements; never the bottleneck


@register_task("numbersort")
class NumberSort(SyntheticSeq2Seq):
    """Sort space-separated numbers numerically: ``12 3 40 -> 3 12 40``.

    ``min_len``/``max_len`` count numbers; each is drawn uniformly from ``min_value..max_value``.
    Numeric (not string) order is the point: ``3`` comes before ``12``. The ``seed`` preset draws
    0-30 three-digit numbers (100..999), as the original harness does.
    """

    reserved: ClassVar[str] = " "
    defaults: ClassVar[dict] = {"min_len": 4, "max_len": 8, "min_value": 0, "max_value": 99}
    presets: ClassVar[dict[str, dict]] = {"seed": {"min_len": 0, "max_len": 30, "min_value": 100, "max_value": 999}}
    allows_empty: ClassVar[bool] = True

    def __init__(
        self,
        min_len: int | None = None,
        max_len: int | None = None,
        max_value: int | None = None,
        min_value: int | None = None,
        preset: str | None = None,
    ):
        opts = _resolve_preset(
            type(self),
            preset,
            {"min_len": min_len, "max_len": max_len, "min_value": min_value, "max_value": max_value},
        )
        min_value, max_value = opts["min_value"], opts["max_value"]
        if isinstance(max_value, bool) or not isinstance(max_value, int) or max_value < 1:
            raise ConfigError(f"max_value={max_value!r}: must be a positive integer")
        if isinstance(min_value, bool) or not isinstance(min_value, int) or not 0 <= min_value <= max_value:
            raise ConfigError(f"min_value={min_value!r}: must be an integer in 0..max_value ({max_value})")
        self.min_value = min_value
        self.max_value = max_value
        super().__init__(opts["min_len"], opts["max_len"], alphabet=string.digits)

    def options(self) -> dict:
        return {
            "min_len": self.min_len,
            "max_len": self.max_len,
            "min_value": self.min_value,
            "max_value": self.max_value,
        }

    def draw_input(self, rng: random.Random) -> str:
        length = rng.randint(self.min_len, self.max_len)
        return " ".join(str(rng.randint(self.min_value, self.max_value)) for _ in range(length))

    def solve(self, x: str) -> str:
        return " ".join(str(v) for v in sorted(int(t) for t in x.split()))

    def space_size(self) -> int | None:
        return _count_strings(self.max_value - self.min_value + 1, self.min_len, self.max_len)

    def alphabet(self) -> str:
        return string.digits + " "


@register_task("long_addition")
class LongAddition(Task):
    """Add two decimal numbers: ``123+989 -> 1112``.

    Each operand has ``min_digits..max_digits`` digits (drawn per operand) and no leading zero.
    ``reverse_digits=True`` writes operands and sum least-significant digit first, which is known
    to make addition much easier to learn (Lee et al., 2023, "Teaching Arithmetic to Small
    Transformers", sec. 4): ``321+989 -> 2111``.
    """

    kind: ClassVar[TaskKind] = "seq2seq"
    defaults: ClassVar[dict] = {"min_digits": 1, "max_digits": 5}
    presets: ClassVar[dict[str, dict]] = {"seed": {"min_digits": 2, "max_digits": 20}}

    def __init__(
        self,
        min_digits: int | None = None,
        max_digits: int | None = None,
        reverse_digits: bool = False,
        preset: str | None = None,
    ):
        opts = _resolve_preset(type(self), preset, {"min_digits": min_digits, "max_digits": max_digits})
        min_digits, max_digits = opts["min_digits"], opts["max_digits"]
        _check_lengths(min_digits, max_digits, "digits")
        self.min_digits = min_digits
        self.max_digits = max_digits
        self.reverse_digits = bool(reverse_digits)

    def _operand(self, rng: random.Random) -> int:
        d = rng.randint(self.min_digits, self.max_digits)
        return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)

    def solve(self, x: str) -> str:
        """The sum for an input ``"a+b"`` written in this task's digit order."""
        a, b = x.split("+")
        if self.reverse_digits:
            return str(int(a[::-1]) + int(b[::-1]))[::-1]
        return str(int(a) + int(b))

    def generate(self, n: int, seed: int) -> list[Pair]:
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            a, b = str(self._operand(rng)), str(self._operand(rng))
            if self.reverse_digits:
                a, b = a[::-1], b[::-1]
            x = f"{a}+{b}"
            out.append(Pair(x, self.solve(x)))
        return out

    def space_size(self) -> int | None:
        per_operand = 10**self.max_digits - (10 ** (self.min_digits - 1) if self.min_digits > 1 else 0)
        total = per_operand**2
        return total if total <= _LARGE else None

    def alphabet(self) -> str:
        return string.digits + "+"
