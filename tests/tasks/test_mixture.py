"""Task mixtures: train mixes entries by rate, val/test come from the evaluated entry alone."""

from __future__ import annotations

from collections import Counter

import pytest

from t5lab.errors import ConfigError
from t5lab.tasks import build_splits, get_task
from t5lab.tasks.mixture import shares
from t5lab.tasks.synthetic import Copy, Histogram

LETTERS = "abcdefghij"


def mixture(**options):
    tasks = {
        "histogram": {"options": {"min_len": 3, "max_len": 9, "alphabet": LETTERS}, "prefix": "histogram: "},
        "copy": {"options": {"min_len": 3, "max_len": 9, "alphabet": LETTERS}, "prefix": "copy: ", "rate": 3},
    }
    return get_task("mixture", **{"tasks": tasks, "evaluate": "histogram", **options})


def _task_of(record):
    return record.input.split(": ", 1)[0]


def test_shares_follow_the_rates_and_sum_to_the_total():
    assert shares(10, [1, 1]) == [5, 5]
    assert shares(10, [1, 3]) == [3, 7]  # 2.5 / 7.5: the tie goes to the first in order
    assert shares(7, [1, 1, 1]) == [3, 2, 2]
    assert shares(0, [1, 2]) == [0, 0]
    for total in range(40):
        assert sum(shares(total, [0.3, 1.0, 2.5])) == total


def test_train_mixes_by_rate_and_val_test_hold_only_the_evaluated_task():
    splits = build_splits(mixture(), train=400, val=50, test=60, seed=3)
    train = Counter(_task_of(r) for r in splits["train"])
    assert train == {"histogram": 100, "copy": 300}
    assert {_task_of(r) for r in splits["val"] + splits["test"]} == {"histogram"}
    assert (len(splits["val"]), len(splits["test"])) == (50, 60)
    # every target is its own task's closed form of the unprefixed input
    solve = {"histogram": Histogram().solve, "copy": Copy().solve}
    for record in splits["train"] + splits["val"] + splits["test"]:
        name, x = record.input.split(": ", 1)
        assert record.target == solve[name](x)
    keys = [{r.key() for r in splits[s]} for s in ("train", "val", "test")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    # the train split is shuffled, not one task after the other
    first = [_task_of(r) for r in splits["train"][:40]]
    assert 0 < first.count("histogram") < 40


def test_splits_are_seed_deterministic_and_the_evaluated_entry_draws_like_its_plain_task():
    a = build_splits(mixture(), train=40, val=10, test=10, seed=5)
    assert a == build_splits(mixture(), train=40, val=10, test=10, seed=5)
    assert a != build_splits(mixture(), train=40, val=10, test=10, seed=6)
    # evaluated entry = its plain task's splits (train share 10, val 10, test 10) behind its prefix
    plain = build_splits(get_task("histogram", min_len=3, max_len=9, alphabet=LETTERS), train=10, val=10, test=10, seed=5)
    for split in ("val", "test"):
        assert [r.input for r in a[split]] == ["histogram: " + r.input for r in plain[split]]


def test_evaluate_names_the_entry_and_the_order_of_entries_does_not_matter():
    splits = build_splits(mixture(evaluate="copy"), train=20, val=5, test=5, seed=0)
    assert {_task_of(r) for r in splits["val"] + splits["test"]} == {"copy"}
    assert all(r.input.removeprefix("copy: ") == r.target for r in splits["test"])
    forward = mixture().options()
    backward = dict(forward, tasks=dict(reversed(forward["tasks"].items())))
    assert list(backward["tasks"]) != list(forward["tasks"])
    assert build_splits(get_task("mixture", **backward), 30, 5, 5, 1) == build_splits(mixture(), 30, 5, 5, 1)


def test_list_form_options_and_alphabet():
    task = get_task("mixture", tasks=[{"task": "copy", "prefix": "c: "}, "reverse"], evaluate="copy")
    assert task.options()["tasks"]["copy"]["prefix"] == "c: "
    assert task.options()["evaluate"] == "copy"
    assert get_task("mixture", tasks={"copy": None}).options()["evaluate"] == "copy"  # one entry: no need to name it
    assert set(task.alphabet()) == set(get_task("copy").alphabet()) | set("c: ")
    assert get_task("mixture", **task.options()).options() == task.options()  # options round-trip


def test_a_suffix_marks_the_end_of_the_input():
    task = get_task("mixture", tasks={"copy": {"suffix": " c"}, "reverse": {"prefix": "r: ", "suffix": "!"}},
                    evaluate="reverse")
    splits = build_splits(task, train=40, val=4, test=4, seed=0)
    for r in splits["train"]:
        if r.input.endswith(" c"):
            assert r.input[: -len(" c")] == r.target
        else:
            assert r.input.startswith("r: ") and r.input.endswith("!") and r.input[3:-1][::-1] == r.target
    assert set(" c!r:") <= set(task.alphabet())


@pytest.mark.parametrize(
    "options,needle",
    [
        ({}, "mixture tasks=None"),
        ({"tasks": {}}, "give a mapping"),
        ({"tasks": {"copy": {"prefx": "c: "}}}, "no key 'prefx'"),
        ({"tasks": {"copy": {"rate": 0}}}, "rate=0"),
        ({"tasks": {"copy": {"prefix": 3}}}, "prefix=3"),
        ({"tasks": {"copy": {"suffix": None}}}, "suffix=None"),
        ({"tasks": {"parity": {}}}, "classification task"),
        ({"tasks": {"nosuch": {}}}, "unknown task"),
        ({"tasks": {"text": {}}}, "text task"),
        ({"tasks": {"copy": {}}, "evaluate": "reverse"}, "evaluate='reverse'"),
        ({"tasks": {"copy": {}, "reverse": {}}}, "evaluate=None"),
        ({"tasks": [{"task": "copy"}, {"task": "copy"}]}, "twice"),
    ],
)
def test_bad_mixtures_are_one_line_config_errors(options, needle):
    with pytest.raises(ConfigError, match=None) as info:
        get_task("mixture", **options)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_mixture_trains_from_a_config(tmp_path):
    import yaml

    from t5lab.cli import main
    from tests.train.conftest import tiny

    cfg = tiny(
        data={
            "task": "mixture",
            "options": {"tasks": {"reverse": {"prefix": "r: "}, "copy": {"prefix": "c: "}}, "evaluate": "reverse"},
            "train": 64,
            "val": 8,
            "test": 8,
        },
        train={"max_steps": 2, "val_check_interval": 2},
    )
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    samples = next((tmp_path / "runs").glob("*/*/samples.txt")).read_text()
    assert "r: " in samples and "c: " not in samples  # validation decodes the evaluated task only


def test_a_task_read_from_a_file_is_refused():
    from t5lab.tasks import Pair, Task, register_task

    @register_task("_mixture_test_pairs")
    class FilePairs(Task):  # a seq2seq task with load(), as a file-backed plugin task would be
        def load(self):
            return [Pair("a", "a")]

    with pytest.raises(ConfigError, match="read from a file"):
        get_task("mixture", tasks={"_mixture_test_pairs": {}})
