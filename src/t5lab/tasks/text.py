"""Text corpora and the text objectives applied to them.

A text task yields one ``Pair("", text)`` per sample: a causal-LM example. An objective re-cuts
it (``t5lab.formulation`` picks one per model variant; the functions are here so they can be
used and tested alone):

- ``causal_lm``: ``Pair("", text)``, loss on the whole text;
- ``prefix_lm``: ``Pair(text[:k], text[k:])`` cut at a seeded random (or fixed) fraction of the
  text, at a word boundary by default (Raffel et al., 2020, sec. 3.2.3 "prefix LM");
- ``span_corruption``: T5's denoising objective on token ids (:mod:`t5lab.tasks.span_corruption`).

Sources:

- ``text`` / ``botchan``: the bundled public-domain novel *Botchan* (see ``t5lab/data/SOURCE.md``),
  available offline;
- a ``.txt`` path (one sample per line, blank lines skipped) or a ``.jsonl`` path (a ``"text"`` field);
- ``hf:NAME[/CONFIG]``: a Hugging Face ``datasets`` dataset (needs ``pip install datasets`` and
  network access or a local cache), e.g. ``hf:wikitext/wikitext-2-raw-v1``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from t5lab.errors import ConfigError
from t5lab.tasks.base import Pair, Task, TaskKind, register_task
from t5lab.tasks.hf import load_hf_rows

OBJECTIVES: tuple[str, ...] = ("causal_lm", "prefix_lm", "span_corruption")


def bundled_corpus_path() -> Path:
    """Path of the bundled *Botchan* text (``t5lab/data/botchan.txt``)."""
    return Path(str(resources.files("t5lab") / "data" / "botchan.txt"))


def _join(lines: list[str], join_lines: int) -> list[str]:
    if join_lines == 1:
        return lines
    return [" ".join(lines[i : i + join_lines]) for i in range(0, len(lines), join_lines)]


@register_task("text_file", extensions=(".txt",))
class TextFile(Task):
    """Texts from a ``.txt`` file (one sample per non-blank line) or a ``.jsonl`` file (a text field).

    Args:
        path: The file.
        text_column: The JSONL field holding the text.
        join_lines: Join this many consecutive samples (with a space) into one, e.g. to turn a
            hard-wrapped book into paragraph-sized samples.
    """

    kind: ClassVar[TaskKind] = "text"

    def __init__(self, path: str, text_column: str = "text", join_lines: int = 1):
        self.path = str(path)
        p = Path(self.path)
        if not p.is_file():
            raise ConfigError(f"text file {self.path} does not exist; check the path")
        if p.suffix.lower() not in (".txt", ".jsonl"):
            raise ConfigError(f"{self.path}: text files must be .txt or .jsonl")
        if isinstance(join_lines, bool) or not isinstance(join_lines, int) or join_lines < 1:
            raise ConfigError(f"join_lines={join_lines!r}: must be a positive integer")
        self.text_column = text_column
        self.join_lines = join_lines

    def texts(self) -> list[str]:
        """The samples, in file order."""
        p = Path(self.path)
        lines: list[str] = []
        with p.open(encoding="utf-8") as f:
            if p.suffix.lower() == ".txt":
                lines = [line.rstrip("\r\n") for line in f if line.strip()]
            else:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ConfigError(f"{p}:{lineno}: not valid JSON ({err.msg})") from None
                    text = obj.get(self.text_column) if isinstance(obj, dict) else None
                    if not isinstance(text, str):
                        raise ConfigError(
                            f"{p}:{lineno}: no string field {self.text_column!r}; set text_column= to the text field"
                        )
                    if text.strip():
                        lines.append(text)
        return _join(lines, self.join_lines)

    def load(self) -> list[Pair]:
        return [Pair("", t) for t in self.texts()]


@register_task("botchan")
class Botchan(TextFile):
    """The bundled public-domain corpus (Natsume Soseki, *Botchan*, English translation): ~4k lines."""

    def __init__(self, join_lines: int = 1):
        super().__init__(str(bundled_corpus_path()), join_lines=join_lines)

    def options(self) -> dict:
        return {"join_lines": self.join_lines}


register_task("text")(Botchan)


@register_task("hf", prefix="hf:")
class HFText(Task):
    """A Hugging Face ``datasets`` dataset as a text corpus: task name ``hf:NAME[/CONFIG]``.

    Needs the optional ``datasets`` package and the hub (or its local cache). Empty texts are
    skipped. With ``label_column`` set, use :class:`HFLabelled` (picked automatically by get_task).

    Args:
        dataset: ``NAME`` or ``NAME/CONFIG`` (``wikitext/wikitext-2-raw-v1``, ``ptb_text_only``).
        split: Which split of the dataset to read; build_splits then cuts train/val/test from it.
        text_column: Field holding the text.
        limit: Read at most this many rows.
    """

    kind: ClassVar[TaskKind] = "text"

    def __init__(self, dataset: str, split: str = "train", text_column: str = "text", limit: int | None = None):
        if not isinstance(dataset, str) or not dataset.strip("/"):
            raise ConfigError(f"hf dataset name {dataset!r}: write hf:NAME or hf:NAME/CONFIG, e.g. hf:wikitext/wikitext-2-raw-v1")
        self.dataset = dataset
        self.split = split
        self.text_column = text_column
        self.limit = limit

    @classmethod
    def for_path(cls, name: str, options: dict[str, Any]) -> str:
        """With ``label_column`` the dataset is labelled: the registered ``hf_labelled`` task."""
        return "hf_labelled" if "label_column" in options else "hf"

    def rows(self) -> list[dict[str, Any]]:
        """The raw rows of the dataset split (one-line ConfigError when it cannot be read)."""
        return load_hf_rows(self.dataset, self.split, self.limit)

    def load(self) -> list[Pair]:
        out = []
        for i, row in enumerate(self.rows()):
            text = row.get(self.text_column)
            if not isinstance(text, str):
                raise ConfigError(
                    f"hf:{self.dataset} row {i} has no string field {self.text_column!r}; "
                    f"its fields are {', '.join(row)} (set text_column=)"
                )
            if text.strip():
                out.append(Pair("", text.strip("\n")))
        return out


# ------------------------------------------------------------------------------------------------
# Objectives on text
# ------------------------------------------------------------------------------------------------


def causal_lm(text: str) -> Pair:
    """The causal-LM record of ``text``: no input, the whole text is the target."""
    return Pair("", text)


def prefix_lm(
    text: str,
    rng: random.Random | int | None = None,
    fraction: float | None = None,
    boundary: str = "word",
) -> Pair:
    """Cut ``text`` into ``Pair(prefix, rest)`` with ``prefix + rest == text``.

    Args:
        text: The sample.
        rng: ``random.Random`` or seed for the random cut (ignored when ``fraction`` is given).
        fraction: Cut after this fraction of the characters; None draws it uniformly in (0, 1).
        boundary: ``"word"`` moves the cut to the nearest word start (the space goes to the
            target), so neither side ends mid-word; ``"char"`` cuts exactly.

    Returns:
        A pair whose both sides are non-empty when ``text`` has at least 2 characters.
    """
    if boundary not in ("word", "char"):
        raise ConfigError(f"boundary={boundary!r}; use 'word' or 'char'")
    if fraction is None:
        if not isinstance(rng, random.Random):
            rng = random.Random(0 if rng is None else rng)
        fraction = rng.random()
    elif not 0.0 < fraction < 1.0:
        raise ConfigError(f"prefix fraction={fraction}: must lie strictly between 0 and 1")
    if len(text) < 2:
        return Pair("", text)
    k = min(max(round(fraction * len(text)), 1), len(text) - 1)
    if boundary == "word":
        # word starts are positions right after a space; pick the one nearest to k
        starts = [i for i in range(1, len(text)) if text[i - 1] != " " and text[i] == " "]
        if starts:
            k = min(starts, key=lambda i: (abs(i - k), i))
    return Pair(text[:k], text[k:])


def apply_objective(
    records: Iterable[Pair],
    objective: str,
    seed: int = 0,
    fraction: float | None = None,
    boundary: str = "word",
) -> list[Pair]:
    """Apply a text-level objective (``causal_lm`` or ``prefix_lm``) to text records, deterministically.

    ``span_corruption`` works on token ids: use :func:`t5lab.tasks.span_corruption.span_corrupt_text`.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    if objective == "span_corruption":
        raise ConfigError("span_corruption needs token ids; call span_corrupt_text(tokenizer, text, rng) per record")
    texts = [r.input + r.target for r in records]
    if objective == "causal_lm":
        return [causal_lm(t) for t in texts]
    rng = random.Random(seed)
    return [prefix_lm(t, rng, fraction, boundary) for t in texts]


def corpus_texts(records: Sequence[Pair]) -> list[str]:
    """The full texts of text records (e.g. to train a unigram tokenizer on the training split)."""
    return [r.input + r.target for r in records]
