"""The mask and bucket helpers of t5lab.models.masks, each against a reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import T5Config
from transformers.masking_utils import create_causal_mask
from transformers.models.t5.modeling_t5 import T5Attention

from t5lab.models import masks
from t5lab.models.t5core import CACHE_FIELD


def _loop_prefix_lm(prefix: list[list[int]]) -> torch.Tensor:
    """Reference by definition: allowed[b, q, k] = k <= q or (prefix[b][q] and prefix[b][k])."""
    batch, length = len(prefix), len(prefix[0])
    out = torch.zeros(batch, length, length, dtype=torch.bool)
    for b in range(batch):
        for q in range(length):
            for k in range(length):
                out[b, q, k] = k <= q or (prefix[b][q] == 1 and prefix[b][k] == 1)
    return out


def test_causal_mask_is_lower_triangular():
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    assert torch.equal(masks.causal_mask(3), expected)


def test_prefix_of_length_zero_is_causal():
    prefix = torch.zeros(2, 5, dtype=torch.long)
    assert torch.equal(masks.prefix_lm_mask(prefix), masks.causal_mask(5).expand(2, 5, 5))


def test_prefix_lm_mask_matches_definition():
    prefix = [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    got = masks.prefix_lm_mask(torch.tensor(prefix))
    assert torch.equal(got, _loop_prefix_lm(prefix))
    # the prefix block of row 0 is full, its target rows stay causal
    assert got[0, :3, :3].all()
    assert not got[0, 3, 4]
    # a full prefix is full (bidirectional) attention
    assert got[2].all()


def test_prefix_mask_from_lengths():
    got = masks.prefix_mask_from_lengths(torch.tensor([0, 2, 4]), 4)
    assert got.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_apply_padding_hides_keys_only():
    mask = masks.causal_mask(3)
    attention_mask = torch.tensor([[0, 1, 1]])
    got = masks.apply_padding(mask, attention_mask)
    assert got.shape == (1, 3, 3)
    assert not got[0, :, 0].any()  # the padding key is hidden from every query
    assert torch.equal(got[0, :, 1:], mask[:, 1:])  # everything else is unchanged
    assert masks.apply_padding(mask, None) is mask


def test_to_additive():
    mask = torch.tensor([True, False])
    got = masks.to_additive(mask, torch.float16)
    assert got.dtype == torch.float16
    assert got.tolist() == [0.0, torch.finfo(torch.float16).min]


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_prefix_lm_mask_equals_transformers_create_causal_mask(implementation):
    """Reference: transformers' mask factory with the prefix as an extra "or" mask function."""
    config = T5Config(d_model=8, num_heads=1)
    config._attn_implementation = implementation
    prefix = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]])
    attention_mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])

    def both_in_prefix(batch_idx, head_idx, q_idx, kv_idx):
        return prefix.bool()[batch_idx, q_idx] & prefix.bool()[batch_idx, kv_idx]

    got = create_causal_mask(
        config=config, inputs_embeds=torch.zeros(3, 5, 8), attention_mask=attention_mask,
        or_mask_function=both_in_prefix, **{CACHE_FIELD: None},  # the cache keyword's name moved in 5.24
    )
    if implementation == "eager":
        got = got == 0
    expected = masks.apply_padding(masks.prefix_lm_query_mask(prefix, 5), attention_mask)
    real = attention_mask.bool()  # transformers may un-hide rows of padding queries
    assert torch.equal(got[:, 0][real], expected[real])


def test_prefix_violations():
    ok = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert masks.prefix_violations(ok).numel() == 0
    late = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]])
    assert masks.prefix_violations(late).tolist() == [0]
    # left padding before the prompt is not a violation when the padding is masked
    left_padded = torch.tensor([[0, 0, 1, 1, 0]])
    assert masks.prefix_violations(left_padded).tolist() == [0]
    assert masks.prefix_violations(left_padded, torch.tensor([[0, 0, 1, 1, 1]])).numel() == 0


def test_relative_positions():
    got = masks.relative_positions(2, 4, past_length=2)
    assert got.tolist() == [[-2, -1, 0, 1], [-3, -2, -1, 0]]


@settings(max_examples=25, deadline=None)
@given(
    bidirectional=st.booleans(),
    num_buckets=st.sampled_from([4, 8, 32]),
    max_distance=st.sampled_from([8, 16, 128]),
)
def test_t5_bucket_equals_transformers(bidirectional, num_buckets, max_distance):
    relative = torch.arange(-300, 301)[None, :]
    ours = masks.t5_relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
    theirs = T5Attention._relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
    assert torch.equal(ours, theirs)


def test_one_way_buckets_merge_all_forward_distances():
    """The T5 decoder's problem that the forward table solves: +1 and +50 share bucket 0."""
    relative = torch.tensor([0, 1, 5, 50])
    assert masks.t5_relative_position_bucket(relative, bidirectional=False, num_buckets=8).tolist() == [0] * 4


def test_forward_bucket_closed_form():
    # 8 buckets, max_distance 16: exact for d - 1 in 0..3, then log buckets 4..7
    # d - 1 = 4..5 -> 4, 6..7 -> 5, 8..11 -> 6, >= 12 -> 7  (4 + floor(log(x/4)/log(4) * 4))
    distance = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 100])
    got = masks.forward_relative_position_bucket(distance, num_buckets=8, max_distance=16)
    assert got.tolist() == [0, 1, 2, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    assert got[0] != got[4]  # +1 and +5 are told apart
    # non-forward distances map to 0 (and are selected away by the caller)
    assert masks.forward_relative_position_bucket(torch.tensor([0, -3]), 8, 16).tolist() == [0, 0]


def test_causal_cross_mask_with_cached_queries():
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    got = masks.causal_cross_mask(pad, query_length=3, past=1)  # queries at positions 1..3
    want = torch.tensor(
        [
            [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]],
            [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]],
        ],
        dtype=torch.bool,
    )[:, None]
    assert torch.equal(got, want)
    assert torch.equal(masks.causal_cross_mask(pad, 3, torch.tensor(1)), want)  # a static cache's length


def test_prefix_lm_query_mask_is_the_last_rows_of_the_full_mask():
    prefix = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0]])
    full = masks.prefix_lm_mask(prefix)  # (B, 6, 6)
    assert torch.equal(masks.prefix_lm_query_mask(prefix, 6), full)
    assert torch.equal(masks.prefix_lm_query_mask(prefix, 2), full[:, -2:])
