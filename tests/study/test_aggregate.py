"""Per-point summaries, thresholds and the comparison sentences, on hand-made run records."""

from __future__ import annotations

import math

import pytest

from t5lab.study.aggregate import RunRecord, compare_pair, default_threshold, pairwise, summarize_point, title
from t5lab.study.stats import t_ppf


def rec(point, seed, em, curve, seconds=10.0, steps=40):
    return RunRecord(point, seed, {"test_exact_match": em, "test_loss": 1 - em}, {"val_exact_match": curve}, seconds, steps)


A = [rec("a", 0, 0.9, ([10, 20, 30, 40], [0.1, 0.5, 0.8, 0.9])), rec("a", 1, 0.8, ([10, 20, 30, 40], [0.1, 0.3, 0.6, 0.8])),
     rec("a", 2, 0.85, ([10, 20, 30, 40], [0.2, 0.6, 0.7, 0.85]))]
B = [rec("b", 0, 0.7, ([10, 20, 30, 40], [0.0, 0.2, 0.4, 0.7])), rec("b", 1, 0.75, ([10, 20, 30, 40], [0.1, 0.2, 0.5, 0.75])),
     rec("b", 2, 0.6, ([10, 20, 30, 40], [0.0, 0.1, 0.3, 0.6]))]


def test_summary_by_hand():
    s = summarize_point("a", {"variant": "a"}, "copy", "a", "exact_match", A, threshold=0.6)
    em = s.primary
    assert em.mean == pytest.approx(0.85)
    assert em.half_width == pytest.approx(t_ppf(0.975, 2) * 0.05 / math.sqrt(3))
    # first validation step at >= 0.6: 30, 30, 20 -> mean 80/3; time: 10 s * step / 40
    assert s.reached == 3
    assert s.steps_to_threshold.mean == pytest.approx(80 / 3)
    assert s.seconds_to_threshold.mean == pytest.approx((7.5 + 7.5 + 5.0) / 3)
    # the curve band: mean over seeds per step
    assert [x for x, _ in s.band] == [10, 20, 30, 40]
    assert s.band[1][1].mean == pytest.approx((0.5 + 0.3 + 0.6) / 3)


def test_threshold_default_is_a_level_every_run_reaches():
    # best values: a 0.9, 0.8, 0.85; b 0.7, 0.75, 0.6 -> the worst best is 0.6
    assert default_threshold("exact_match", [A, B]) == 0.6
    losses = [RunRecord("x", 0, {}, {"val_loss": ([1, 2], [3.0, 2.0])}), RunRecord("x", 1, {}, {"val_loss": ([1, 2], [2.5, 1.0])})]
    assert default_threshold("loss", [losses]) == 2.0
    b = summarize_point("b", {}, "copy", "b", "exact_match", B, threshold=0.72)
    assert b.reached == 1 and b.steps_to_threshold.n == 1


def test_sentence_names_the_winner_with_ci_and_p():
    r = compare_pair("copy", "exact_match", "t5", "decoder_only", [0.7, 0.75, 0.6], [0.9, 0.8, 0.85])
    # decoder_only ahead by 1/6 (see test_stats.test_welch_by_hand), p = 0.042
    assert r.sentence.startswith("decoder_only beats t5 on copy by 0.167 exact_match, 95% CI [")
    assert "p=0.042" in r.sentence and "Cohen's d=2.58" in r.sentence
    lo, hi = (float(x) for x in r.sentence.split("CI [")[1].split("]")[0].split(", "))
    assert lo > 0 and hi > lo and (lo + hi) / 2 == pytest.approx(1 / 6, abs=1e-3)


def test_sentence_for_losses_and_no_difference():
    r = compare_pair("text", "loss", "a", "b", [2.0, 2.1, 1.9], [2.5, 2.6, 2.4])
    assert r.sentence.startswith("a beats b on text by 0.5 loss (lower)")
    same = compare_pair("copy", "exact_match", "a", "b", [0.5, 0.6, 0.7], [0.55, 0.65, 0.7])
    assert "do not differ significantly" in same.sentence
    few = compare_pair("copy", "exact_match", "a", "b", [0.5], [0.6])
    assert few.comparison is None and "too few" in few.sentence


def test_pairwise_within_groups_only():
    sa = summarize_point("a", {"variant": "a"}, "copy", "a", "exact_match", A)
    sb = summarize_point("b", {"variant": "b"}, "copy", "b", "exact_match", B)
    sc = summarize_point("c", {"variant": "a"}, "sort", "a", "exact_match", A)
    pairs = pairwise([sa, sb, sc], {"a": A, "b": B, "c": A})
    assert [(p.group, p.a, p.b) for p in pairs] == [("copy", "a", "b")]
    assert title("task=text,objective=lm") == "text, lm" and title("task=copy,objective=-") == "copy"
    assert pairs[0].comparison.diff == pytest.approx(1 / 6)
