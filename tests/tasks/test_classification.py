"""Classification tasks: synthetic labels checked by hand and by reference, labelled-file parsing."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from t5lab.errors import ConfigError
from t5lab.tasks import Labelled, build_splits, get_task
from t5lab.tasks.classification import LabelledFile
from t5lab.tasks.text import TextFile


@pytest.mark.parametrize(
    ("name", "options", "text", "label"),
    [
        ("parity", {}, "0110", 0),
        ("parity", {}, "0111", 1),
        ("majority", {}, "abbab", 1),
        ("majority", {"alphabet": "xyz"}, "zzxy", 2),
        ("is_sorted", {}, "abbd", 1),
        ("is_sorted", {}, "bad", 0),
        ("is_sorted", {"alphabet": "cba"}, "ccba", 1),
        ("contains", {}, "cab", [0, 1, 2]),
        ("contains", {}, "jjj", [9]),
        ("count", {"symbol": "c"}, "cbcc", 3.0),
        ("digit_sum", {}, "1902", 12.0),
    ],
)
def test_hand_checked_labels(name, options, text, label):
    assert get_task(name, **options).label_of(text) == label


@pytest.mark.parametrize(
    ("name", "num_labels", "problem_type"),
    [
        ("parity", 2, "single_label_classification"),
        ("majority", 2, "single_label_classification"),
        ("is_sorted", 2, "single_label_classification"),
        ("contains", 10, "multi_label_classification"),
        ("count", 1, "regression"),
        ("digit_sum", 1, "regression"),
    ],
)
def test_heads_and_reference_labels(name, num_labels, problem_type):
    task = get_task(name)
    assert task.kind == "classification"
    assert (task.num_labels, task.problem_type) == (num_labels, problem_type)
    assert task.id2label == dict(enumerate(task.label_names))
    records = task.generate(300, seed=0)
    assert records == task.generate(300, seed=0) and records != task.generate(300, seed=1)
    for r in records:
        assert set(r.text) <= set(task.alphabet())
        if name == "parity":
            assert r.label == sum(map(int, r.text)) % 2
        elif name == "majority":
            ranked = Counter(r.text).most_common() + [("", 0)]
            assert ranked[0][0] == task.label_names[r.label] and ranked[0][1] > ranked[1][1]
        elif name == "is_sorted":
            assert r.label == int(list(r.text) == sorted(r.text))
        elif name == "contains":
            assert r.label == sorted(task.label_names.index(c) for c in set(r.text))
        elif name == "count":
            assert r.label == float(r.text.count("a"))
        else:
            assert r.label == float(sum(map(int, r.text)))


def test_balanced_classes_where_promised():
    for name in ("parity", "is_sorted", "majority"):
        counts = Counter(r.label for r in get_task(name).generate(2000, seed=0))
        assert min(counts.values()) > 600, (name, counts)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_csv_string_labels_map_to_sorted_ids(tmp_path):
    f = _write(tmp_path / "d.csv", 'text,label\n"good, really",pos\nbad,neg\nmeh,neutral\nok,pos\n')
    task = get_task(f)
    assert isinstance(task, LabelledFile)
    assert task.label_names == ["neg", "neutral", "pos"]
    assert task.problem_type == "single_label_classification" and task.num_labels == 3
    assert task.load() == [
        Labelled("good, really", 2),
        Labelled("bad", 0),
        Labelled("meh", 1),
        Labelled("ok", 2),
    ]
    assert task.label2id["pos"] == 2


def test_tsv_with_custom_columns_and_integer_ids(tmp_path):
    f = _write(tmp_path / "d.tsv", "id\tsentence\ty\n1\tone\t0\n2\ttwo\t2\n3\tthree\t10\n")
    task = get_task(f, text_column="sentence", label_column="y")
    assert [r.label for r in task.load()] == [0, 2, 10]  # ids, not sorted-string positions
    assert task.num_labels == 11


def test_jsonl_multi_label_lists_and_separator(tmp_path):
    f = _write(
        tmp_path / "d.jsonl",
        "\n".join(json.dumps(o) for o in [{"text": "a", "label": ["x", "z"]}, {"text": "b", "label": []}, {"text": "c", "label": ["y"]}]),
    )
    task = get_task(f)
    assert task.problem_type == "multi_label_classification"
    assert task.label_names == ["x", "y", "z"]
    assert [r.label for r in task.load()] == [[0, 2], [], [1]]

    g = _write(tmp_path / "m.csv", "text,label\na,sports|news\nb,news\nc,\n")
    task = get_task(g, label_separator="|")
    assert task.label_names == ["news", "sports"]
    assert [r.label for r in task.load()] == [[0, 1], [0], []]


def test_regression_inferred_from_floats_or_forced(tmp_path):
    f = _write(tmp_path / "r.csv", "text,label\na,0.5\nb,-2\nc,3e1\n")
    task = get_task(f)
    assert task.problem_type == "regression" and task.num_labels == 1
    assert [r.label for r in task.load()] == [0.5, -2.0, 30.0]
    g = _write(tmp_path / "s.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 5}\n')
    assert [r.label for r in get_task(g, problem_type="regression").load()] == [1.0, 5.0]


def test_label_names_fix_the_order(tmp_path):
    f = _write(tmp_path / "d.csv", "text,label\na,pos\nb,neg\n")
    task = get_task(f, label_names=["pos", "neg"])
    assert [r.label for r in task.load()] == [0, 1]
    with pytest.raises(ConfigError, match=r"d.csv:3: label 'neg' is not one of label_names"):
        get_task(f, label_names=["pos", "other"])


def test_file_errors_are_clear_one_liners(tmp_path):
    f = _write(tmp_path / "d.csv", "sentence,label\na,1\n")
    with pytest.raises(ConfigError, match=r"d.csv:2 has no column 'text'; its columns are sentence, label"):
        get_task(f)
    with pytest.raises(ConfigError, match="does not exist"):
        get_task(str(tmp_path / "missing.csv"))
    bad = _write(tmp_path / "b.jsonl", '{"text": "a", "label": 1}\n{not json}\n')
    with pytest.raises(ConfigError, match=r"b.jsonl:2: not valid JSON"):
        get_task(bad)
    r = _write(tmp_path / "r.csv", "text,label\na,1.5\nb,nan\n")
    with pytest.raises(ConfigError, match="not a finite number"):
        get_task(r, problem_type="regression")
    with pytest.raises(ConfigError, match="problem_type='binary'") as err:
        get_task(f, problem_type="binary")
    assert "\n" not in str(err.value)


def test_jsonl_without_labels_is_a_text_task(tmp_path):
    f = _write(tmp_path / "t.jsonl", '{"text": "hello there"}\n{"text": "general kenobi"}\n')
    task = get_task(f)
    assert isinstance(task, TextFile) and task.kind == "text"
    assert [p.target for p in task.load()] == ["hello there", "general kenobi"]


def test_file_splits_are_disjoint_and_deterministic(tmp_path):
    rows = "".join(f"text {i},{i % 3}\n" for i in range(50))
    f = _write(tmp_path / "d.csv", "text,label\n" + rows + "text 0,0\n")  # one duplicate text
    splits = build_splits(f, train=0.6, val=0.2, test=None, seed=4)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    texts = [r.text for s in splits.values() for r in s]
    assert len(set(texts)) == 50
    assert splits == build_splits(f, train=0.6, val=0.2, test=None, seed=4)
