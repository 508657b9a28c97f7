"""Tokenizers with T5 conventions, built offline: byte (ByT5), char (from a task alphabet), unigram,
word (whole frequent words, characters for the rest).

Every tokenizer built here

- has ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2 (T5's layout; ``decoder_start_token_id`` = pad),
- appends ``</s>`` to every encoded sequence, as T5 does,
- carries ``extra_ids`` sentinels ``<extra_id_0>``, ``<extra_id_1>``, ... for span corruption
  (for char, unigram and word tokenizers ``<extra_id_0>`` has the *highest* id, as in T5),
- round-trips through ``save_pretrained(dir)`` + ``transformers.AutoTokenizer.from_pretrained(dir)``
  without network access.

Use :func:`sentinel_ids` to get the sentinel ids in ``<extra_id_0>, <extra_id_1>, ...`` order for
any of them (ByT5's sentinels run in increasing id order, so never assume a direction).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from t5lab.errors import ConfigError, T5LabError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

TokenizerKind = Literal["byte", "char", "unigram", "word"]
KINDS: tuple[str, ...] = ("byte", "char", "unigram", "word")
SPECIAL_TOKENS: tuple[str, str, str] = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2
# ByT5's own default; T5's sentencepiece vocabularies carry 100.
DEFAULT_EXTRA_IDS = {"byte": 125, "char": 100, "unigram": 100, "word": 100}
# the word tokenizer marks a word's first piece with this, as SentencePiece does
_WORD_START = "\u2581"
_SENTINEL = re.compile(r"^<extra_id_(\d+)>$")


def build_tokenizer(
    kind: TokenizerKind,
    texts: Iterable[str] | None = None,
    vocab_size: int | None = None,
    alphabet: str | None = None,
    extra_ids: int | None = None,
    min_frequency: int | None = None,
    add_dummy_prefix: bool | None = None,
) -> PreTrainedTokenizerBase:
    """Build a tokenizer with T5 conventions.

    Args:
        kind: ``"byte"`` (transformers' ``ByT5Tokenizer``: UTF-8 bytes, 384 ids), ``"char"``
            (one id per character of ``alphabet``, or of the characters in ``texts``) or
            ``"unigram"`` (a SentencePiece-style Unigram model trained on ``texts``, loaded as
            transformers' ``T5Tokenizer``) or ``"word"`` (one id per whitespace-separated word seen at
            least ``min_frequency`` times in ``texts``, every other word spelled in characters; see
            :func:`word_vocabulary`).
        texts: Training texts; required for ``"unigram"`` and ``"word"``, used by ``"char"`` when no
            alphabet is given.
        vocab_size: Target size of the unigram vocabulary *without* the sentinels (default 1000); for
            ``"word"`` the most words it keeps (default: every word frequent enough).
        alphabet: Characters of a char tokenizer, usually ``task.alphabet()``; a word tokenizer spells
            with these and the characters of ``texts``.
        extra_ids: Number of ``<extra_id_N>`` sentinels (default 125 for byte, 100 otherwise).
        min_frequency: ``"word"`` only: how often a word must occur in ``texts`` to get its own id
            (default 2).
        add_dummy_prefix: ``"word"`` only: whether a text's first word takes the word-start mark
            ``▁`` as every other word does (default True, SentencePiece's ``add_dummy_prefix``).
            False leaves it bare, so ``"abca xyz"`` becomes ``a b c a ▁xyz``: the first letter is the
            same id as the letters after it.

    Returns:
        A ``PreTrainedTokenizerBase`` with pad=0, eos=1, unk=2.

    Raises:
        ConfigError: Unknown kind or missing/invalid arguments.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; use one of {', '.join(KINDS)}")
    if add_dummy_prefix is not None and kind != "word":
        raise ConfigError(f"add_dummy_prefix is for the word tokenizer only; this one is {kind}")
    if extra_ids is None:
        extra_ids = DEFAULT_EXTRA_IDS[kind]
    if isinstance(extra_ids, bool) or not isinstance(extra_ids, int) or extra_ids < 0:
        raise ConfigError(f"extra_ids={extra_ids!r}: must be a non-negative integer")
    if kind == "byte":
        from transformers import ByT5Tokenizer

        return ByT5Tokenizer(extra_ids=extra_ids)
    if kind == "char":
        if alphabet is None:
            if texts is None:
                raise ConfigError(
                    "a char tokenizer needs alphabet= (e.g. task.alphabet()) or texts= to collect characters from"
                )
            alphabet = "".join(sorted(set().union(*map(set, texts))))
        return _char_tokenizer(alphabet, extra_ids)
    if texts is None:
        raise ConfigError(f"a {kind} tokenizer needs texts= to train on (e.g. the training split's texts)")
    if kind == "word":
        return _word_tokenizer(
            texts,
            alphabet,
            vocab_size,
            2 if min_frequency is None else min_frequency,
            extra_ids,
            True if add_dummy_prefix is None else add_dummy_prefix,
        )
    return _unigram_tokenizer(texts, 1000 if vocab_size is None else vocab_size, extra_ids)


def known_size(kind: str, alphabet: str | None = None, extra_ids: int | None = None) -> int | None:
    """``len()`` of the tokenizer :func:`build_tokenizer` makes, where that is fixed without building it.

    Byte: the specials, 256 bytes and the sentinels; char: the specials, each distinct character of
    ``alphabet`` and the sentinels. None for unigram and word (their sizes come from the texts), for a char
    tokenizer without an alphabet (its characters come from the data) and for a saved directory.
    """
    if kind not in KINDS or kind in ("unigram", "word") or (kind == "char" and not alphabet):
        return None
    extra = DEFAULT_EXTRA_IDS[kind] if extra_ids is None else extra_ids
    body = 256 if kind == "byte" else len(set(alphabet or ""))
    return len(SPECIAL_TOKENS) + body + extra


def _sentinels_descending(extra_ids: int) -> list[str]:
    # T5 puts <extra_id_0> at the last id: appending N-1, ..., 0 after the vocabulary does that.
    return [f"<extra_id_{i}>" for i in range(extra_ids - 1, -1, -1)]


def _char_tokenizer(alphabet: str, extra_ids: int) -> PreTrainedTokenizerBase:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    if not isinstance(alphabet, str) or not alphabet:
        raise ConfigError(f"char tokenizer alphabet={alphabet!r}: give a non-empty string of characters")
    chars = list(dict.fromkeys(alphabet))  # keep first occurrences, in the given order
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    sentinels = _add_sentinels(vocab, extra_ids)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # One piece per character, whitespace and newlines included ([\s\S] also matches '\n'), so
    # spaces survive: no normalizer, no whitespace splitting. Fuse joins pieces without spaces.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _t5_fast_tokenizer(tok, vocab, sentinels)


def _add_sentinels(vocab: dict[str, int], extra_ids: int) -> list[str]:
    """Append the sentinels to ``vocab`` (T5's layout: <extra_id_0> gets the highest id); returns them."""
    sentinels = _sentinels_descending(extra_ids)
    for tok in sentinels:
        vocab[tok] = len(vocab)
    return sentinels


def _t5_fast_tokenizer(tok: Tokenizer, vocab: dict[str, int], sentinels: list[str]) -> PreTrainedTokenizerBase:
    """Wrap a ``tokenizers`` backend with T5's conventions: ``</s>`` appended, pad/eos/unk, sentinels."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=sentinels[::-1],  # <extra_id_0> first, as T5Tokenizer lists them
        clean_up_tokenization_spaces=False,
    )


def word_vocabulary(
    texts: Iterable[str], min_frequency: int = 2, max_words: int | None = None
) -> list[str]:
    """The words a word tokenizer keeps whole: those seen ``min_frequency`` times or more in ``texts``
    (split on whitespace), most frequent first (ties in first-seen order), at most ``max_words``."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in text.split():
            counts[word] = counts.get(word, 0) + 1
    kept = [w for w, n in counts.items() if n >= min_frequency]
    kept.sort(key=lambda w: -counts[w])  # stable: ties keep first-seen order
    return kept if max_words is None else kept[:max_words]


def _word_tokenizer(
    texts: Iterable[str],
    alphabet: str | None,
    max_words: int | None,
    min_frequency: int,
    extra_ids: int,
    add_dummy_prefix: bool = True,
) -> PreTrainedTokenizerBase:
    # WordPiece's greedy longest match (Wu et al. 2016, arXiv:1609.08144, sec. 4.1) over {"▁" + each
    # frequent word} + {each character, with "▁" at a word's start and bare inside one} is exactly
    # "a known word is one id, any other word its characters"; the pieces are chosen here, not learned.
    # "▁" marks a word's start as SentencePiece does, so decoding never needs to strip a prefix.
    # Without the dummy prefix a text's first word is bare, so each kept word also gets a bare id
    # (a frequent first word stays one id); a bare word may then also match inside a spelled one.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    for name, value in (("min_frequency", min_frequency), ("vocab_size", max_words)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"word tokenizer {name}={value!r}: give an integer >= 1")
    texts = list(texts)
    for text in texts:
        if " ".join(text.split()) != text or _WORD_START in text:
            raise ConfigError(
                f"word tokenizer: the text {text[:40]!r} has whitespace other than single spaces between words "
                f"(or a {_WORD_START!r}), which it cannot give back on decoding; use tokenizer: char or byte"
            )
    chars = list(dict.fromkeys((alphabet or "") + "".join(sorted(set().union(*map(set, texts)) - {" "}))))
    if not chars:
        raise ConfigError("word tokenizer: texts= holds no non-space character to build a vocabulary from")
    if not isinstance(add_dummy_prefix, bool):
        raise ConfigError(f"word tokenizer add_dummy_prefix={add_dummy_prefix!r}: give true or false")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(_WORD_START + ch, len(vocab))
        vocab.setdefault(ch, len(vocab))
    for word in word_vocabulary(texts, min_frequency, max_words):
        vocab.setdefault(_WORD_START + word, len(vocab))
        if not add_dummy_prefix:
            vocab.setdefault(word, len(vocab))
    sentinels = _add_sentinels(vocab, extra_ids)
    tok = Tokenizer(
        models.WordPiece(vocab, unk_token="<unk>", continuing_subword_prefix="", max_input_chars_per_word=10**9)
    )
    scheme = "always" if add_dummy_prefix else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_WORD_START, prepend_scheme=scheme, split=True)
    tok.decoder = decoders.Metaspace(replacement=_WORD_START, prepend_scheme=scheme, split=True)
    return _t5_fast_tokenizer(tok, vocab, sentinels)


def _unigram_tokenizer(texts: Iterable[str], vocab_size: int, extra_ids: int) -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 8:
        raise ConfigError(f"vocab_size={vocab_size!r}: a unigram vocabulary needs at least 8 entries")
    texts = [t for t in texts if t]
    if not texts:
        raise ConfigError("unigram tokenizer: texts= holds no non-empty text to train on")
    # Same pre-tokenization as transformers' T5Tokenizer (whitespace split + "▁" metaspace), so the
    # trained pieces are exactly the ones T5Tokenizer will see at encode time.
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        unk_token="<unk>",
        # every character of the corpus gets a piece, so in-alphabet text never becomes <unk>
        initial_alphabet=sorted(set().union(*map(set, texts)) - {" ", "\n", "\t"}),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    pieces = [(p, float(s)) for p, s in json.loads(tok.to_str())["model"]["vocab"]]
    if [p for p, _ in pieces[:3]] != list(SPECIAL_TOKENS):  # the trainer puts specials first
        raise T5LabError(f"unigram trainer did not put {SPECIAL_TOKENS} first; got {pieces[:3]}")
    pieces += [(s, 0.0) for s in _sentinels_descending(extra_ids)]
    return T5Tokenizer(vocab=pieces, extra_ids=extra_ids)


def sentinel_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ... in that order (what span corruption uses).

    Raises:
        ConfigError: If the tokenizer has no sentinels.
    """
    found: dict[int, int] = {}
    for token, idx in tokenizer.get_vocab().items():
        m = _SENTINEL.match(token)
        if m:
            found[int(m.group(1))] = idx
    ids = [found[i] for i in range(len(found)) if i in found]
    if not ids:
        raise ConfigError(
            "this tokenizer has no <extra_id_N> sentinels; build it with extra_ids > 0 to use span corruption"
        )
    return ids


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a tokenizer saved in a directory (``save_pretrained`` output, or a bare ``spiece.model``).

    Works offline. A directory with only a SentencePiece ``spiece.model`` loads as transformers'
    ``T5Tokenizer`` (converted with the ``sentencepiece`` and ``protobuf`` packages).

    Raises:
        T5LabError: If the directory does not exist or holds no tokenizer files.
    """
    path = Path(path)
    if not path.is_dir():
        raise T5LabError(f"tokenizer directory {path} does not exist; give a directory written by save_pretrained")
    files = {p.name for p in path.iterdir()}
    markers = {"tokenizer.json", "tokenizer_config.json", "spiece.model", "vocab.json", "tokenizer.model"}
    if not files & markers:
        raise T5LabError(
            f"{path} holds no tokenizer (expected one of {', '.join(sorted(markers))}); "
            "save one there with tokenizer.save_pretrained(dir)"
        )
    if files & markers == {"spiece.model"}:
        from transformers import T5Tokenizer

        try:
            return T5Tokenizer.from_pretrained(str(path), local_files_only=True)
        except (ImportError, ValueError) as err:
            raise T5LabError(
                f"{path}/spiece.model: cannot convert it ({err}); install sentencepiece and protobuf"
            ) from err
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise T5LabError(f"cannot load the tokenizer in {path}: {str(err).splitlines()[0]}") from err


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike) -> Path:
    """``save_pretrained`` into ``path`` atomically: written to a sibling temp dir, then renamed.

    An existing directory's tokenizer files are replaced; other files in it are kept.
    """
    import shutil
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tokenizer.save_pretrained(str(tmp))
        if not path.exists():
            os.replace(tmp, path)
            return path
        for f in tmp.iterdir():  # replace file by file: each os.replace is atomic
            os.replace(f, path / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


class CharEncoder:
    """Encodes text exactly as a char tokenizer of :func:`build_tokenizer` does, without its regex pass.

    The ``tokenizers`` backend splits every character with a regex and looks each piece up; for
    50,000 copy strings that is ~7 s of a 2-core CPU, a dict lookup per character ~0.3 s. A text that
    holds the first character of any added token (``<pad>``, ``</s>``, ``<extra_id_N>`` ...) goes
    through the tokenizer itself, which matches added tokens before splitting.
    """

    def __init__(self, vocab: dict[str, int], unk_id: int, tokenizer: PreTrainedTokenizerBase):
        self.vocab, self.unk_id, self.tokenizer = vocab, unk_id, tokenizer
        self.escape = frozenset(t[0] for t in tokenizer.get_added_vocab() if t)

    @classmethod
    def for_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> CharEncoder | None:
        """The encoder when ``tokenizer`` is a char tokenizer built here (also after a reload), else None."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or tokenizer.unk_token_id is None:
            return None
        try:
            spec = json.loads(backend.to_str())
        except Exception:  # noqa: BLE001 - a backend that cannot describe itself gets no fast path
            return None
        pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        if (
            spec.get("normalizer") is not None
            or model.get("type") != "WordLevel"
            or pre.get("type") != "Split"
            or pre.get("pattern") != {"Regex": r"[\s\S]"}
            or pre.get("behavior") != "Isolated"
            or pre.get("invert")
        ):
            return None
        vocab = {t: i for t, i in model.get("vocab", {}).items() if len(t) == 1}
        return cls(vocab, tokenizer.unk_token_id, tokenizer)

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added."""
        get, unk, escape = self.vocab.get, self.unk_id, self.escape
        out = []
        for text in texts:
            if escape and not escape.isdisjoint(text):
                out.append(list(self.tokenizer(text, add_special_tokens=False)["input_ids"]))
            else:
                out.append([get(c, unk) for c in text])
        return out


def encode_lengths(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[int]:
    """Token counts (eos included) of ``texts``: handy for choosing ``max_length``."""
    return [len(ids) for ids in tokenizer(list(texts))["input_ids"]]
