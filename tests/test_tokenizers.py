"""Tokenizers: T5 conventions, eos, sentinels, offline save/load round trips, spiece.model loading."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, ByT5Tokenizer, T5Tokenizer

from t5lab.errors import ConfigError, T5LabError
from t5lab.tasks import get_task
from t5lab.tasks.text import bundled_corpus_path
from t5lab.tokenizers import build_tokenizer, load_tokenizer, save_tokenizer, sentinel_ids


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [r.target for r in get_task("text").load()]


@pytest.fixture(scope="module")
def unigram(corpus):
    return build_tokenizer("unigram", texts=corpus[:800], vocab_size=300, extra_ids=20)


def _kinds(unigram):
    return {
        "byte": build_tokenizer("byte"),
        "char": build_tokenizer("char", alphabet=get_task("histogram").alphabet() + "\n"),
        "unigram": unigram,
        "word": build_tokenizer("word", texts=["12 7 12 ab", "7 12 x"], alphabet="abxyz0123456789"),
    }


SAMPLES = {
    "byte": ["héllo wörld", "  two  spaces\nand a newline ", "<>!"],
    "char": ["abc 1 2 3", "  a  b\n\nj ", "0123456789"],
    "unigram": ["I was a boy", "the teacher of mathematics said so.", "Botchan"],
    "word": ["12 7 12", "ab 127 zz9", "", "x"],
}


@pytest.mark.parametrize("kind", ["byte", "char", "unigram", "word"])
def test_t5_conventions_and_roundtrip_offline(kind, unigram, tmp_path):
    tok = _kinds(unigram)[kind]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert (tok.pad_token, tok.eos_token, tok.unk_token) == ("<pad>", "</s>", "<unk>")
    save_tokenizer(tok, tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    assert load_tokenizer(tmp_path / "tok").get_vocab() == tok.get_vocab()
    assert len(loaded) == len(tok)
    for text in SAMPLES[kind]:
        ids = tok(text)["input_ids"]
        assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1  # eos appended, like T5
        assert loaded(text)["input_ids"] == ids
        assert loaded.decode(ids, skip_special_tokens=True) == text
        assert tok.unk_token_id not in ids


def test_char_tokenizer_layout_one_id_per_character():
    tok = build_tokenizer("char", alphabet="ba c", extra_ids=3)
    vocab = tok.get_vocab()
    assert [vocab[c] for c in "ba c"] == [3, 4, 5, 6]  # after pad, eos, unk, in the given order
    # sentinels last, <extra_id_0> with the highest id, as in T5
    assert [vocab[f"<extra_id_{i}>"] for i in range(3)] == [9, 8, 7]
    assert len(tok) == 10
    assert tok("ab c")["input_ids"] == [4, 3, 5, 6, 1]
    assert tok("a<extra_id_1>b")["input_ids"] == [4, 8, 3, 1]  # sentinels are single tokens
    assert tok("axb")["input_ids"] == [4, 2, 3, 1]  # out of alphabet -> unk
    batch = tok(["a", "abc"], padding=True)
    assert batch["input_ids"] == [[4, 1, 0, 0], [4, 3, 6, 1]]
    assert batch["attention_mask"] == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_char_tokenizer_from_texts_and_errors():
    tok = build_tokenizer("char", texts=["ab", "ba c"], extra_ids=0)
    assert len(tok) == 3 + 4
    with pytest.raises(ConfigError, match="needs alphabet="):
        build_tokenizer("char")
    with pytest.raises(ConfigError, match="unknown tokenizer kind 'bpe'; use one of byte, char, unigram, word"):
        build_tokenizer("bpe")
    with pytest.raises(ConfigError, match="needs texts="):
        build_tokenizer("unigram", vocab_size=100)
    with pytest.raises(ConfigError, match="extra_ids=-1"):
        build_tokenizer("char", alphabet="a", extra_ids=-1)


def test_sentinels_in_extra_id_order_for_every_kind(unigram):
    for kind, tok in _kinds(unigram).items():
        ids = sentinel_ids(tok)
        assert tok.convert_ids_to_tokens(ids[:3]) == ["<extra_id_0>", "<extra_id_1>", "<extra_id_2>"], kind
        assert len(set(ids)) == len(ids)
    assert len(sentinel_ids(_kinds(unigram)["byte"])) == 125
    u = sentinel_ids(unigram)
    assert len(u) == 20 and u[0] == len(unigram) - 1 and u == sorted(u, reverse=True)  # T5 layout
    with pytest.raises(ConfigError, match="no <extra_id_N> sentinels"):
        sentinel_ids(build_tokenizer("char", alphabet="ab", extra_ids=0))


def test_byte_tokenizer_is_byt5():
    tok = build_tokenizer("byte")
    assert isinstance(tok, ByT5Tokenizer) and len(tok) == 256 + 3 + 125
    assert tok("é")["input_ids"] == [0xC3 + 3, 0xA9 + 3, 1]  # UTF-8 bytes shifted by the 3 specials


def test_unigram_is_a_t5_tokenizer_with_the_requested_size(unigram, corpus):
    assert isinstance(unigram, T5Tokenizer)
    assert len(unigram) == 300 + 20
    ids = unigram(corpus[2000])["input_ids"]
    # a trained subword vocabulary compresses: fewer tokens than characters
    assert len(ids) < 0.6 * len(corpus[2000])
    assert unigram.decode(ids, skip_special_tokens=True) == " ".join(corpus[2000].split())


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(T5LabError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README").write_text("x")
    with pytest.raises(T5LabError, match="holds no tokenizer"):
        load_tokenizer(tmp_path / "empty")


def test_save_tokenizer_leaves_no_temp_dirs(tmp_path):
    tok = build_tokenizer("char", alphabet="ab")
    save_tokenizer(tok, tmp_path / "t")
    save_tokenizer(tok, tmp_path / "t")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_spiece_model_directory_loads_as_t5_tokenizer(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    d = tmp_path / "sp"
    d.mkdir()
    spm.SentencePieceTrainer.train(
        input=str(bundled_corpus_path()),
        model_prefix=str(d / "spiece"),
        vocab_size=200,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        input_sentence_size=2000,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    (d / "spiece.vocab").unlink()
    assert [p.name for p in d.iterdir()] == ["spiece.model"]
    tok = load_tokenizer(d)
    assert isinstance(tok, T5Tokenizer)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert len(tok) == 200 + 100  # the sentencepiece vocabulary + T5's 100 sentinels
    ref = spm.SentencePieceProcessor(model_file=str(d / "spiece.model"))
    text = "I was a boy of about ten years old."
    ids = tok(text)["input_ids"]
    assert ids == ref.encode(text) + [1]  # same pieces as sentencepiece itself, plus eos
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_known_size_is_the_built_tokenizer_s_size():
    from t5lab.tokenizers import known_size

    assert known_size("byte") == len(build_tokenizer("byte"))
    assert known_size("byte", extra_ids=3) == len(build_tokenizer("byte", extra_ids=3))
    assert known_size("char", alphabet="abca d") == len(build_tokenizer("char", alphabet="abca d"))
    assert known_size("char", alphabet="xy", extra_ids=0) == len(build_tokenizer("char", alphabet="xy", extra_ids=0))
    assert known_size("char") is None and known_size("unigram") is None and known_size("/some/dir") is None
    assert known_size("word", alphabet="ab") is None


def test_char_encoder_equals_the_char_tokenizer(tmp_path, unigram):
    """The dict-lookup fast path gives the tokenizer's own ids, added tokens and unknowns included."""
    import random

    from t5lab.tokenizers import CharEncoder

    tok = build_tokenizer("char", alphabet="abcxyz019 \n")
    rng = random.Random(0)
    texts = ["", "abc", "a</s>b", "<extra_id_3>x", "<<pad>", "</", "x<unk>", "é ü\n", "Q"] + [
        "".join(rng.choice("abcxyz<>/s\n éQ") for _ in range(rng.randint(0, 20))) for _ in range(300)
    ]
    expected = [list(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    assert CharEncoder.for_tokenizer(tok)(texts) == expected
    save_tokenizer(tok, tmp_path / "tok")
    reloaded = CharEncoder.for_tokenizer(load_tokenizer(tmp_path / "tok"))
    assert reloaded is not None and reloaded(texts) == expected
    # not a char tokenizer: no fast path (the formulation then calls the tokenizer)
    assert CharEncoder.for_tokenizer(build_tokenizer("byte")) is None
    assert CharEncoder.for_tokenizer(unigram) is None


def test_word_tokenizer_layout_frequent_words_whole_the_rest_spelled():
    tok = build_tokenizer("word", texts=["12 7 12", "7 12 ab"], alphabet="ba", extra_ids=2)
    vocab = tok.get_vocab()
    # specials, then each character at a word's start ("▁c") and inside one ("c"), alphabet first, then
    # the texts'; then the words seen twice or more, most frequent first; then the sentinels
    chars = ["▁b", "b", "▁a", "a", "▁1", "1", "▁2", "2", "▁7", "7"]
    assert [vocab[c] for c in chars] == list(range(3, 13))
    # "12" gets its own id, the word "7" is the character's; "ab" occurs once
    assert vocab["▁12"] == 13 and "▁ab" not in vocab
    assert (vocab["<extra_id_0>"], vocab["<extra_id_1>"]) == (15, 14) and len(tok) == 16
    assert tok("12 7 ab")["input_ids"] == [13, 11, 5, 4, 1]
    assert tok("127 21")["input_ids"] == [13, 12, 9, 8, 1]  # "▁12" + "7": longest known piece first
    assert tok("12 q")["input_ids"] == [13, 2, 1]  # a character it never saw: the word is unknown
    assert tok.decode([13, 12, 9, 8, 1], skip_special_tokens=True) == "127 21"
    assert tok.decode([12, 13], skip_special_tokens=True) == "7 12"  # a word may start inside-a-word


def test_word_tokenizer_min_frequency_and_vocab_size_cap():
    from t5lab.tokenizers import word_vocabulary

    texts = ["aa bb cc dd", "bb cc", "cc", "#x #x"]
    assert word_vocabulary(texts, 1) == ["cc", "bb", "#x", "aa", "dd"]  # by count, ties in first-seen order
    assert word_vocabulary(texts, 2) == ["cc", "bb", "#x"]
    assert word_vocabulary(texts, 1, max_words=1) == ["cc"]
    tok = build_tokenizer("word", texts=texts, vocab_size=1, min_frequency=1, extra_ids=0)
    assert "▁cc" in tok.get_vocab() and "▁bb" not in tok.get_vocab()
    assert tok.tokenize("#x bb cc") == ["▁#", "x", "▁b", "b", "▁cc"]
    assert tok.decode(tok("#x bb")["input_ids"], skip_special_tokens=True) == "#x bb"


def test_word_tokenizer_without_dummy_prefix_leaves_the_first_word_bare(tmp_path):
    """add_dummy_prefix=False (SentencePiece's option): the first word carries no "▁", so its letters
    are the ids the same letters have inside a word, and a kept word also has a bare id for that place."""
    texts = ["abca xy", "2 1 1 2", "12 3 12"]
    with_prefix = build_tokenizer("word", texts=texts, extra_ids=0)
    tok = build_tokenizer("word", texts=texts, extra_ids=0, add_dummy_prefix=False)
    assert with_prefix.tokenize("abca xy") == ["▁a", "b", "c", "a", "▁x", "y"]
    assert tok.tokenize("abca xy") == ["a", "b", "c", "a", "▁x", "y"]
    vocab = tok.get_vocab()
    ids = tok("abca xy")["input_ids"]
    assert ids[0] == ids[3] == vocab["a"] and ids[-1] == tok.eos_token_id
    # "12" and "2" are kept words (seen twice): one id at the start too, the bare one
    assert tok.tokenize("12 3 12") == ["12", "▁3", "▁12"]
    assert tok.tokenize("2 1 12") == ["2", "▁1", "▁12"]
    assert "12" in vocab and "12" not in with_prefix.get_vocab()
    for text in ["abca xy", "2 1 1 2", "12 3 12", "", "zz"]:  # "zz": unknown characters, <unk>
        got = tok.decode(tok(text)["input_ids"], skip_special_tokens=True)
        assert got == (text if text != "zz" else "")
    save_tokenizer(tok, tmp_path / "tok")
    reloaded = load_tokenizer(tmp_path / "tok")
    assert reloaded("12 3 abca")["input_ids"] == tok("12 3 abca")["input_ids"]
    assert reloaded.decode(tok("2 1 12")["input_ids"], skip_special_tokens=True) == "2 1 12"
    with pytest.raises(ConfigError, match="add_dummy_prefix is for the word tokenizer only"):
        build_tokenizer("char", alphabet="ab", add_dummy_prefix=False)
    with pytest.raises(ConfigError, match="add_dummy_prefix='no'"):
        build_tokenizer("word", texts=texts, add_dummy_prefix="no")


def test_word_tokenizer_errors():
    with pytest.raises(ConfigError, match="needs texts="):
        build_tokenizer("word")
    with pytest.raises(ConfigError, match="other than single spaces.*use tokenizer: char"):
        build_tokenizer("word", texts=["a  b"])
    for bad in ["a\nb", " a", "a ", "a\u2581b"]:
        with pytest.raises(ConfigError, match="other than single spaces"):
            build_tokenizer("word", texts=[bad])
    with pytest.raises(ConfigError, match="min_frequency=0"):
        build_tokenizer("word", texts=["a"], min_frequency=0)
    with pytest.raises(ConfigError, match="no non-space character"):
        build_tokenizer("word", texts=[""])


def test_word_tokenizer_gives_histogram_one_token_per_count():
    """The lever the histogram recipe uses: each count is one token, so target token j is the count
    of input character j (a char tokenizer puts it at 2j, after the spaces)."""
    task = get_task("histogram", preset="seed")
    train = task.generate(300, seed=0)
    tok = build_tokenizer("word", texts=[t for r in train for t in (r.input, r.target)], alphabet=task.alphabet())
    for r in task.generate(50, seed=1):
        src, tgt = tok(r.input)["input_ids"], tok(r.target)["input_ids"]
        assert len(src) == len(tgt) == len(r.input) + 1
        assert tok.convert_ids_to_tokens(tgt[:-1]) == ["\u2581" + w for w in r.target.split()]
        assert tok.decode(tgt, skip_special_tokens=True) == r.target
