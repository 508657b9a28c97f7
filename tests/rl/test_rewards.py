"""Rewards: built-ins by closed form, import paths, the EncT5 classifier reward against the model."""

from __future__ import annotations

import pytest
import torch

from t5lab.errors import T5LabError
from t5lab.rl.rewards import ClassifierReward, accuracy, compute_scores, exact_match, load_reward


def test_exact_match_and_accuracy_closed_form():
    assert exact_match(["p", "p"], ["abc ", "abd"], targets=["abc", "abc"]) == [1.0, 0.0]
    # 2 of 3 characters in place; an extra character counts as an error: 3 / 4
    assert accuracy(["p", "p", "p"], ["abd", "abcx", ""], targets=["abc", "abc", ""]) == pytest.approx(
        [2 / 3, 3 / 4, 1.0]
    )


def test_import_paths_and_factories(tmp_path, monkeypatch):
    (tmp_path / "rew_mod.py").write_text(
        "def length(prompts, responses):\n    return [float(len(r)) for r in responses]\n"
        "def scaled(factor):\n    return lambda prompts, responses: [factor * len(r) for r in responses]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_reward("rew_mod:length")(["a"], ["xyz"]) == [3.0]
    assert load_reward(f"{tmp_path / 'rew_mod.py'}:length")(["a"], ["xy"]) == [2.0]
    assert load_reward("rew_mod:scaled", {"factor": 0.5})(["a"], ["xyzw"]) == [2.0]
    for bad in ("nope", "rew_mod:nothing", "no_such_module_x:fn", "missing_file.py:fn"):
        with pytest.raises(T5LabError):
            load_reward(bad)


def test_compute_scores_checks_the_reward_output():
    assert compute_scores(exact_match, ["a"], ["b"], ["b"]).tolist() == [1.0]
    with pytest.raises(T5LabError, match="needs targets"):
        compute_scores(exact_match, ["a"], ["b"], None)
    with pytest.raises(T5LabError, match="2 scores for 1"):
        compute_scores(lambda p, r: [1.0, 2.0], ["a"], ["b"])
    with pytest.raises(T5LabError, match="non-finite"):
        compute_scores(lambda p, r: [float("nan")], ["a"], ["b"])


@pytest.fixture
def classifier_dir(tmp_path):
    import t5lab  # noqa: F401
    from t5lab.models.enct5 import EncT5Config, EncT5ForSequenceClassification
    from t5lab.tokenizers import build_tokenizer

    tok = build_tokenizer("char", alphabet="ab")
    torch.manual_seed(0)
    cfg = EncT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, dropout_rate=0.0, num_labels=2,
                      id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})
    model = EncT5ForSequenceClassification(cfg).eval()
    run = tmp_path / "run"
    model.save_pretrained(run / "model")
    tok.save_pretrained(run / "model")
    (run / "DONE").write_text("")
    return run, model, tok


def test_classifier_reward_is_the_label_probability(classifier_dir):
    run, model, tok = classifier_dir
    texts = ["abba", "b", "aaab", ""]
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = torch.softmax(model(**enc).logits, -1)[:, 1]
    for where in (run, run / "model", run.parent):  # run dir, model dir, runs/<name> (newest run)
        reward = ClassifierReward(where, label="b", batch_size=3)
        torch.testing.assert_close(reward(["x"] * 4, texts), expected)
    by_id = load_reward("classifier", {"model": str(run), "label": 0})
    torch.testing.assert_close(by_id(["x"] * 4, texts), 1 - expected)
    with pytest.raises(T5LabError, match="not a class"):
        ClassifierReward(run, label="c")
    with pytest.raises(T5LabError, match="out of range"):
        ClassifierReward(run, label=2)


def test_plot_reward_curve_writes_a_png(tmp_path):
    from t5lab.rl.run import plot_reward_curve

    run = tmp_path / "ppo_x" / "20260101-000000"
    run.mkdir(parents=True)
    rows = ["step,reward_mean,reward_std,kl"] + [f"{i},{i / 10},{0.1},{i / 5}" for i in range(1, 11)]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    png = plot_reward_curve(tmp_path / "ppo_x", tmp_path / "img" / "curve.png")  # runs/<name> -> newest run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["curve.png"]  # no temp file left behind
    with pytest.raises(T5LabError, match="no metrics.csv"):
        plot_reward_curve(tmp_path / "empty_dir_that_does_not_exist")
