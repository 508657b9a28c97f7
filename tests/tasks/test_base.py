"""Registry, get_task option checking and build_splits (determinism, disjointness, sizes)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from t5lab.errors import ConfigError
from t5lab.tasks import Labelled, Pair, Task, build_splits, get_task, list_tasks, register_task
from t5lab.tasks.base import _REGISTRY, dedupe

SYNTHETIC = ["copy", "reverse", "sort", "numbersort", "histogram", "doublehistogram", "long_addition", "maskedcopy"]
CLASSIFICATION = ["parity", "majority", "is_sorted", "contains", "count", "digit_sum"]


def test_builtin_tasks_are_registered():
    names = set(list_tasks())
    assert set(SYNTHETIC + CLASSIFICATION + ["text", "botchan", "text_file", "labelled_file", "hf"]) <= names


def test_unknown_task_lists_known_names():
    with pytest.raises(ConfigError) as err:
        get_task("revers")
    msg = str(err.value)
    assert "unknown task 'revers'" in msg and "reverse" in msg and "copy" in msg
    assert "\n" not in msg


def test_unknown_option_names_option_and_allowed_ones():
    with pytest.raises(ConfigError, match=r"no option 'maxlen'.*min_len, max_len, alphabet"):
        get_task("copy", maxlen=3)


def test_bad_option_value_is_a_config_error():
    with pytest.raises(ConfigError, match="min_len=5 > max_len=2"):
        get_task("copy", min_len=5, max_len=2)
    with pytest.raises(ConfigError, match="repeats a symbol"):
        get_task("reverse", alphabet="aab")


def test_register_duplicate_name_is_an_error():
    @register_task("_t5lab_test_dup")
    class A(Task):
        def generate(self, n, seed):
            return [Pair(str(i), str(i)) for i in range(n)]

    try:
        with pytest.raises(ConfigError, match="already registered"):

            @register_task("_t5lab_test_dup")
            class B(Task):
                pass

        with pytest.raises(ConfigError, match="Task subclass"):
            register_task("_t5lab_test_other")(object)
    finally:
        _REGISTRY.pop("_t5lab_test_dup", None)


def test_user_task_works_through_the_registry():
    @register_task("_t5lab_test_upper")
    class Upper(Task):
        def __init__(self, width: int = 3):
            self.width = width

        def generate(self, n, seed):
            import random

            rng = random.Random(seed)
            out = []
            for _ in range(n):
                x = "".join(rng.choice("abc") for _ in range(self.width))
                out.append(Pair(x, x.upper()))
            return out

    try:
        task = get_task("_t5lab_test_upper", width=4)
        assert task.is_generative and task.kind == "seq2seq"
        splits = build_splits(task, train=10, val=5, test=5, seed=3)
        assert all(p.target == p.input.upper() and len(p.input) == 4 for p in splits["train"])
    finally:
        _REGISTRY.pop("_t5lab_test_upper", None)


@pytest.mark.parametrize("name", SYNTHETIC + CLASSIFICATION)
def test_splits_are_deterministic_disjoint_and_sized(name):
    a = build_splits(name, train=60, val=20, test=20, seed=1)
    b = build_splits(name, train=60, val=20, test=20, seed=1)
    c = build_splits(name, train=60, val=20, test=20, seed=2)
    assert a == b
    assert a != c
    assert [len(a[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    keys = [{r.key() for r in a[s]} for s in ("train", "val", "test")]
    assert sum(map(len, keys)) == 100  # no duplicates inside a split either
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def test_splits_fill_a_small_space_exactly_and_refuse_more():
    # copy over 2 symbols, length 1..2: 2 + 4 = 6 distinct examples
    splits = build_splits("copy", train=4, val=1, test=1, seed=0, min_len=1, max_len=2, alphabet="ab")
    inputs = sorted(p.input for s in splits.values() for p in s)
    assert inputs == ["a", "aa", "ab", "b", "ba", "bb"]
    with pytest.raises(ConfigError, match="only 6 distinct examples"):
        build_splits("copy", train=5, val=1, test=1, seed=0, min_len=1, max_len=2, alphabet="ab")


def test_split_sizes_are_validated():
    with pytest.raises(ConfigError, match="fractions only apply to file"):
        build_splits("copy", train=0.5, val=10, test=10)
    with pytest.raises(ConfigError, match="cannot be negative"):
        build_splits("copy", train=-1)
    with pytest.raises(ConfigError, match="size is missing"):
        build_splits("copy", train=None)


def test_build_splits_reads_a_data_config_object():
    cfg = SimpleNamespace(task="reverse", options={"max_len": 5}, train=8, val=2, test=2, seed=7)
    splits = build_splits(cfg)
    assert splits == build_splits("reverse", 8, 2, 2, seed=7, max_len=5)
    assert all(len(p.input) <= 5 for p in splits["train"])


def test_file_splits_fractions_counts_and_rest(tmp_path):
    f = tmp_path / "lines.txt"
    f.write_text("".join(f"line {i}\n" for i in range(100)) + "\nline 3\n")  # a blank and a duplicate
    splits = build_splits(str(f), train=None, val=0.1, test=5, seed=0)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [85, 10, 5]
    all_texts = [p.target for s in splits.values() for p in s]
    assert sorted(all_texts) == sorted(f"line {i}" for i in range(100))
    assert splits != build_splits(str(f), train=None, val=0.1, test=5, seed=1)
    with pytest.raises(ConfigError, match="100 distinct records but the splits ask for 120"):
        build_splits(str(f), train=100, val=10, test=10)
    with pytest.raises(ConfigError, match="only one split"):
        build_splits(str(f), train=None, val=None, test=5)


def test_dedupe_keeps_first_occurrence_in_order():
    recs = [Labelled("a", 0), Labelled("b", 1), Labelled("a", 1), Pair("x", "y"), Pair("x", "y")]
    assert dedupe(recs) == [Labelled("a", 0), Labelled("b", 1), Pair("x", "y")]


def test_path_with_unknown_extension_is_a_clear_error(tmp_path):
    f = tmp_path / "data.parquet"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"unsupported extension '.parquet'.*\.csv"):
        get_task(str(f))


@pytest.mark.parametrize(
    "call",
    [
        lambda: get_task("nope"),
        lambda: get_task("copy", bogus=1),
        lambda: get_task("copy", min_len=-1),
        lambda: get_task("reverse", min_len=0),
        lambda: get_task("count", symbol="z"),
        lambda: get_task("numbersort", max_value=0),
        lambda: get_task("maskedcopy", mask_char="__"),
        lambda: get_task("does/not/exist.csv"),
        lambda: get_task("does/not/exist.txt"),
        lambda: get_task(""),
        lambda: build_splits("reverse", train=10**9, val=0, test=0, min_len=1, max_len=2),
        lambda: build_splits("text", train=0.7, val=0.7, test=0),
    ],
)
def test_errors_are_one_line_config_errors(call):
    with pytest.raises(ConfigError) as err:
        call()
    msg = str(err.value)
    # one line; the unknown-name error lists every registered task, so it grows with the registry
    # (and with the tasks doc examples register in the same session)
    assert msg and "\n" not in msg and len(msg) < (400 if "known tasks:" in msg else 300)


def test_default_options_fit_the_default_config_sizes():
    # t5lab.config's DataConfig defaults to 2000/200/200; every built-in generator must fit them
    for name in SYNTHETIC + CLASSIFICATION:
        splits = build_splits(name, train=2000, val=200, test=200, seed=0)
        assert len({r.key() for s in splits.values() for r in s}) == 2400, name


def test_a_small_space_can_be_filled_completely():
    # parity over 4..8 bits has 16+32+64+128+256 = 496 inputs; all of them must be reachable
    splits = build_splits("parity", train=490, val=3, test=3, seed=0, max_len=8)
    assert len({r.text for s in splits.values() for r in s}) == 496
