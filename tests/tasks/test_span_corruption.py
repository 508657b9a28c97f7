"""T5 span corruption: reconstruction, noise fraction, span lengths and sentinel order."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t5lab.tasks.span_corruption import noise_span_lengths, reconstruct, span_corrupt_text, span_corruption

SENTINELS = list(range(1099, 999, -1))  # <extra_id_0> = 1099, <extra_id_1> = 1098, ... as in T5


def _split_target(target, sentinels):
    """[(sentinel, hidden tokens), ...] in order."""
    spans = []
    for t in target:
        if t in sentinels:
            spans.append((t, []))
        else:
            spans[-1][1].append(t)
    return spans


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(0, 300),
    density=st.floats(0.05, 0.5),
    mean=st.floats(1.0, 8.0),
    seed=st.integers(0, 10**6),
)
def test_invariants(length, density, mean, seed):
    ids = [random.Random(seed).randrange(5, 900) for _ in range(length)]
    inputs, targets = span_corruption(ids, SENTINELS, density, mean, seed)
    # inputs + targets reconstruct the original
    assert reconstruct(inputs, targets, SENTINELS) == ids
    spans = _split_target(targets, set(SENTINELS))
    # sentinels are used in order <extra_id_0>, <extra_id_1>, ..., the same in inputs and targets
    used = [t for t in inputs if t in set(SENTINELS)]
    assert used == [s for s, _ in spans] == SENTINELS[: len(spans)]
    noisy = sum(len(h) for _, h in spans)
    if length >= 2:
        # T5: round(length * density) noisy tokens, clamped to [1, length - 1]
        assert noisy == min(max(round(length * density), 1), length - 1)
        assert all(h for _, h in spans)  # no empty span
        assert len(inputs) == length - noisy + len(spans)
        # spans are maximal: two sentinels never touch in the input
        assert all(not (a in SENTINELS and b in SENTINELS) for a, b in zip(inputs, inputs[1:]))
    else:
        assert (inputs, targets) == (ids, [])


def test_noise_fraction_and_mean_span_length_match_t5_defaults():
    rng = random.Random(0)
    noisy = total = spans = 0
    for _ in range(300):
        ids = list(range(10, 10 + 512))
        inputs, targets = span_corruption(ids, SENTINELS, rng=rng)
        n_spans = sum(t in SENTINELS for t in targets)
        noisy += len(targets) - n_spans
        spans += n_spans
        total += len(ids)
    assert noisy / total == pytest.approx(0.15, abs=0.002)
    assert noisy / spans == pytest.approx(3.0, rel=0.05)


def test_hand_example_and_determinism():
    ids = list(range(20))
    a = span_corruption(ids, SENTINELS, rng=7)
    assert a == span_corruption(ids, SENTINELS, rng=7)
    # 20 tokens at 15%: 3 noisy tokens in round(3 / 3) = 1 span; without the roll T5 always
    # drops the last tokens, so the layout is fixed
    assert span_corruption(ids, SENTINELS, rng=7, random_roll=False) == (ids[:17] + [SENTINELS[0]], [SENTINELS[0], 17, 18, 19])
    starts = set()
    for seed in range(200):
        inputs, targets = span_corruption(ids, SENTINELS, rng=seed)
        if len(targets) == 4:  # one span, not wrapped around the end
            hidden = targets[1:]
            assert hidden == list(range(hidden[0], hidden[0] + 3))
            assert inputs == ids[: hidden[0]] + [SENTINELS[0]] + ids[hidden[0] + 3 :]
            starts.add(hidden[0])
        else:  # the roll cut it into a span at the start and one at the end
            cut = targets.index(SENTINELS[1])
            head, tail = targets[1:cut], targets[cut + 1 :]
            assert head == list(range(len(head))) and tail == list(range(20 - len(tail), 20))
            assert len(head) + len(tail) == 3 and head and tail
    assert len(starts) > 10  # spans start anywhere, not only at the end


def test_fewer_sentinels_than_spans_gives_longer_spans():
    ids = list(range(1000))
    inputs, targets = span_corruption(ids, SENTINELS[:2], noise_density=0.3, mean_span_length=2.0, rng=0)
    assert sum(t in SENTINELS for t in targets) == 2
    assert reconstruct(inputs, targets, SENTINELS[:2]) == ids


def test_errors():
    with pytest.raises(ValueError, match="noise_density"):
        span_corruption([1, 2, 3], SENTINELS, noise_density=1.5)
    with pytest.raises(ValueError, match="mean_span_length"):
        span_corruption([1, 2, 3], SENTINELS, mean_span_length=0.5)
    with pytest.raises(ValueError, match="sentinel ids"):
        span_corruption([1, 2, 3], [])
    with pytest.raises(ValueError, match="already contain a sentinel"):
        span_corruption([1, SENTINELS[0], 3], SENTINELS)
    assert noise_span_lengths(1, 0.15, 3.0, random.Random(0)) == [(1, 0)]


def test_span_corrupt_text_with_a_real_tokenizer():
    from t5lab.tokenizers import build_tokenizer, sentinel_ids

    tok = build_tokenizer("char", alphabet="abcdefghij ", extra_ids=10)
    text = "abc def ghij abc def ghij"
    inputs, targets = span_corrupt_text(tok, text, rng=0)
    assert inputs[-1] == targets[-1] == tok.eos_token_id
    ids = reconstruct(inputs[:-1], targets[:-1], sentinel_ids(tok))
    assert tok.decode(ids) == text
    assert tok.convert_ids_to_tokens(targets[0]) == "<extra_id_0>"
    assert "<extra_id_0>" in tok.decode(inputs)
