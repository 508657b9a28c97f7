"""Text corpora (bundled, .txt, .jsonl, hf:) and the causal / prefix LM objectives."""

from __future__ import annotations

import builtins
import random

import pytest

from t5lab.errors import ConfigError
from t5lab.tasks import Pair, build_splits, get_task
from t5lab.tasks.text import apply_objective, bundled_corpus_path, causal_lm, corpus_texts, prefix_lm


def test_bundled_corpus_is_offline_and_clean():
    path = bundled_corpus_path()
    assert path.is_file() and 100_000 < path.stat().st_size < 400_000
    assert (path.parent / "SOURCE.md").is_file()
    task = get_task("text")
    assert task.kind == "text" and task.alphabet() is None
    records = task.load()
    assert len(records) > 3000
    assert all(r.input == "" and r.target.strip() and "\n" not in r.target for r in records)
    assert any("Botchan" in r.target or "BOTCHAN" in r.target for r in records[:5])
    assert type(get_task("botchan")) is type(task)


def test_join_lines_makes_longer_samples():
    one = [r.target for r in get_task("botchan").load()]
    four = [r.target for r in get_task("botchan", join_lines=4).load()]
    assert len(four) == (len(one) + 3) // 4
    assert four[0] == " ".join(one[:4])


def test_txt_file_skips_blank_lines_and_keeps_inner_spaces(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("first  line\n\n   \nsecond line\r\nthird\n", encoding="utf-8")
    task = get_task(str(f))
    assert [r.target for r in task.load()] == ["first  line", "second line", "third"]


def test_jsonl_text_field(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"body": "a b"}\n\n{"body": "c"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.jsonl:1: no string field 'text'"):
        get_task(str(f), text_column="text").load()
    assert [r.target for r in get_task(str(f), text_column="body").load()] == ["a b", "c"]


def test_text_splits_are_fractions_of_the_corpus():
    splits = build_splits("text", train=0.8, val=0.1, test=None, seed=0)
    n = len({r.target for r in get_task("text").load()})
    assert sum(len(v) for v in splits.values()) == n
    assert len(splits["train"]) == int(0.8 * n)
    assert not ({r.target for r in splits["train"]} & {r.target for r in splits["test"]})


def test_hf_dataset_fails_clearly_without_datasets(monkeypatch):
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    task = get_task("hf:wikitext/wikitext-2-raw-v1")
    assert (task.dataset, task.split) == ("wikitext/wikitext-2-raw-v1", "train")
    with pytest.raises(ConfigError, match="needs the Hugging Face 'datasets' package: pip install datasets"):
        task.load()
    with pytest.raises(ConfigError, match="pip install datasets"):
        get_task("hf:glue/sst2", text_column="sentence", label_column="label")


def test_hf_dataset_fails_clearly_offline(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"cannot load hf:t5lab-no-such/dataset.*network access") as err:
        get_task("hf:t5lab-no-such/dataset").load()
    assert "\n" not in str(err.value)


def test_causal_lm_and_prefix_lm_cut_the_text():
    assert causal_lm("abc") == Pair("", "abc")
    text = "Thank you for inviting me to your party last week."
    rng = random.Random(0)
    for _ in range(200):
        p = prefix_lm(text, rng)
        assert p.input + p.target == text
        assert p.input and p.target
        assert p.target.startswith(" ") and not p.input.endswith(" ")  # cut at a word start
    assert prefix_lm("abcdefghij", fraction=0.3, boundary="char") == Pair("abc", "defghij")
    assert prefix_lm("aaaa bbbb cccc", fraction=0.5) == Pair("aaaa bbbb", " cccc")  # 7 -> nearest start 9
    assert prefix_lm("aaaa bbbb cccc", fraction=0.2) == Pair("aaaa", " bbbb cccc")
    assert prefix_lm("oneword", fraction=0.43) == Pair("one", "word")  # no word start: char cut


def test_prefix_lm_fraction_is_uniform_ish():
    rng = random.Random(1)
    text = "x" * 100
    fracs = [len(prefix_lm(text, rng, boundary="char").input) / 100 for _ in range(2000)]
    assert 0.45 < sum(fracs) / len(fracs) < 0.55
    assert min(fracs) < 0.05 and max(fracs) > 0.95


def test_apply_objective_is_deterministic_and_rejects_token_objectives():
    records = get_task("text").load()[:50]
    a = apply_objective(records, "prefix_lm", seed=3)
    assert a == apply_objective(records, "prefix_lm", seed=3) != apply_objective(records, "prefix_lm", seed=4)
    assert corpus_texts(a) == corpus_texts(records)
    assert apply_objective(records, "causal_lm") == records
    with pytest.raises(ConfigError, match="needs token ids"):
        apply_objective(records, "span_corruption")
    with pytest.raises(ConfigError, match="unknown objective 'mlm'"):
        apply_objective(records, "mlm")


def test_hf_code_path_with_a_stand_in_datasets_module(monkeypatch):
    """The hf: tasks read rows through datasets.load_dataset; a stand-in checks the plumbing offline."""
    import sys
    import types

    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        if name == "glue":
            return [{"sentence": "good film", "label": 1}, {"sentence": "bad film", "label": 0}]
        return [{"text": " = Title = \n"}, {"text": ""}, {"text": "Body text .\n"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    text = get_task("hf:wikitext/wikitext-2-raw-v1", split="validation")
    assert [r.target for r in text.load()] == [" = Title = ", "Body text ."]
    assert calls[-1] == ("wikitext", "wikitext-2-raw-v1", "validation")
    sst2 = get_task("hf:glue/sst2", text_column="sentence", label_column="label", limit=1)
    assert sst2.kind == "classification" and sst2.num_labels == 2
    assert [(r.text, r.label) for r in sst2.load()] == [("good film", 1)]
    assert calls[-1] == ("glue", "sst2", "train")
    with pytest.raises(ConfigError, match="no string field 'body'"):
        get_task("hf:ptb_text_only", text_column="body").load()
