"""match: params within tolerance for every variant (counted on meta == a real build), match: tokens by hand."""

from __future__ import annotations

import pytest

from t5lab.study.matching import count_parameters, tokens_per_example
from t5lab.study.runner import plan
from tests.study.conftest import tiny_study

VARIANTS = {
    "encdec": {"model.variant": "t5"},
    "causal": {"model.variant": "decoder_only"},
    "prefix": {"model.variant": "decoder_only", "model.options.prefix_lm": True},
    "pseudo": {"model.variant": "pseudo_dec"},
    "gpt2": {"model.variant": "gpt2"},
}
SIZE = {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 2}


def real_count(cfg) -> int:
    """Parameters of the model the harness really builds (CPU, initialised)."""
    from t5lab.train.run import build_pieces

    return sum(p.numel() for p in build_pieces(cfg).model.parameters())


@pytest.mark.parametrize("reference", ["encdec", "causal"])
def test_every_variant_matched_within_tolerance(reference):
    study = tiny_study(axes={"variants": VARIANTS}, match={"params": reference})
    study["base"]["model"].update(SIZE)
    p = plan(study)
    target = next(pt for pt in p.points if pt.labels["variant"] == reference).info["params"]
    for pt in p.points:
        cfg = pt.configs[0]
        assert abs(pt.info["params"] - target) <= 0.05 * target, (pt.key, pt.info)
        assert pt.info["params"] == real_count(cfg), pt.key  # the meta-device count is the real one
        if pt.labels["variant"] == reference:
            assert "matched" not in pt.info and cfg.model.d_ff == SIZE["d_ff"]
        else:
            assert cfg.model.d_ff == pt.info["matched"]["model.d_ff"]
    causal = next(pt for pt in p.points if pt.labels["variant"] == "causal")
    if reference == "encdec":  # a decoder-only model needs about twice the layers of a 2+2 encoder-decoder
        assert causal.configs[0].model.num_layers > SIZE["num_layers"]


def test_d_ff_alone_when_it_suffices():
    study = tiny_study(axes={"variants": {"a": {"model.variant": "t5"}, "b": {"model.variant": "t5", "model.d_ff": 48}}},
                       match="params")
    study["base"]["model"].update(SIZE)
    [a, b] = plan(study).points
    assert b.info["matched"] == {"model.d_ff": 64} and b.info["params"] == a.info["params"]


def test_tokens_per_example_and_budget_by_hand():
    # copy of exactly 3 letters: seq2seq reads 3 + eos and predicts 3 + eos = 8 tokens; decoder-only
    # reads `abc </s> abc </s>` = 8 tokens too
    study = tiny_study(match={"tokens": 8 * 8 * 5})  # 5 steps of 8 examples
    study["base"]["data"]["options"] = {"min_len": 3, "max_len": 3, "alphabet": "abcd"}
    p = plan(study)
    for pt in p.points:
        assert pt.info["tokens_per_example"] == 8.0
        assert pt.configs[0].train.max_steps == 5 and pt.info["train_tokens"] == 320
        assert tokens_per_example(pt.configs[0]) == 8.0
        assert count_parameters(pt.configs[0]) == pt.info["params"]


def test_tokens_auto_gives_the_reference_budget_to_each_objective():
    tasks = {"text": {"data.task": "botchan", "data.train": 32, "data.val": 0, "data.test": 0, "data.max_length": 16}}
    variants = {"causal": {"model.variant": "decoder_only"}, "encdec": {"model.variant": "t5"}}
    study = tiny_study(axes={"variants": variants, "tasks": tasks, "objectives": ["lm", "span_corruption"]}, match="tokens")
    study["base"]["train"]["max_steps"] = 20
    points = plan(study).points
    groups = {}
    for pt in points:
        groups.setdefault(pt.group, []).append(pt)
    assert len(groups) == 2
    for members in groups.values():
        ref, other = members  # the first variant is the reference: it keeps its steps
        budget = round(20 * ref.info["tokens_per_step"])
        assert ref.configs[0].train.max_steps == 20 and ref.info["token_budget"] == other.info["token_budget"] == budget
        steps = other.configs[0].train.max_steps
        assert steps == round(budget / other.info["tokens_per_step"])
        assert abs(steps * other.info["tokens_per_step"] - budget) <= other.info["tokens_per_step"] / 2
    # full LM (causal) reads input + target of the whole text: fewer tokens per example than the
    # encoder-decoder's prefix LM, whose prefix and continuation may each be max_length long
    lm = groups["task=text,objective=lm"]
    assert lm[0].configs[0].data.objective == "causal_lm" and lm[1].configs[0].data.objective == "prefix_lm"
