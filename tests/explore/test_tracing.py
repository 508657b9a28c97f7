"""trace(): the encoder runs once, the decoder once per new token with a cache growing by one."""

from __future__ import annotations

import pytest

import t5lab
from tests.explore.conftest import LM_FACTORIES, byte_tokenizer


@pytest.mark.parametrize("variant", ["t5", "pseudo_dec"])
def test_trace_of_five_token_generation_seq2seq(variant):
    model, tokenizer = LM_FACTORIES[variant](), byte_tokenizer()
    enc = tokenizer(["hello", "hi"], padding=True, return_tensors="pt")
    with t5lab.trace(model) as tr:
        model.generate(**enc, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert [e.part for e in tr.events] == ["encoder"] + ["decoder"] * 5
    assert tr.events[0].input_shape == (2, 6)
    assert [e.input_shape for e in tr.calls("decoder")] == [(2, 1)] * 5
    assert tr.cache_lengths == [0, 1, 2, 3, 4]
    text = str(tr)
    assert "1 encoder call(s), 5 decoder call(s)" in text and "[0, 1, 2, 3, 4]" in text
    model.generate(**enc, max_new_tokens=2)
    assert len(tr) == 6  # hooks removed on exit


@pytest.mark.parametrize("variant", ["decoder_only", "gpt2"])
def test_trace_of_causal_lm_generation(variant):
    model, tokenizer = LM_FACTORIES[variant](), byte_tokenizer()
    enc = tokenizer(["hello"], add_special_tokens=False, return_tensors="pt")
    with t5lab.trace(model) as tr:
        model.generate(**enc, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert not tr.calls("encoder")
    assert [e.input_shape for e in tr.calls("decoder")] == [(1, 5)] + [(1, 1)] * 4  # prefill, then 1 token
    assert tr.cache_lengths == [0, 5, 6, 7, 8]


@pytest.mark.parametrize("variant", ["t5", "decoder_only"])
def test_trace_records_hook_point_shapes_per_call(variant):
    model, tokenizer = LM_FACTORIES[variant](), byte_tokenizer()
    enc = tokenizer(["hello"], return_tensors="pt")
    with t5lab.trace(model, names=["*.blocks.1.hook_resid_post"]) as tr:
        model.generate(**enc, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    decoder = tr.calls("decoder")
    assert decoder[-1].activations == {"decoder.blocks.1.hook_resid_post": (1, 1, 32)}  # one new position
    if variant == "t5":
        assert tr.calls("encoder")[0].activations == {"encoder.blocks.1.hook_resid_post": (1, 6, 32)}
    else:
        assert decoder[0].activations["decoder.blocks.1.hook_resid_post"] == (1, 6, 32)  # the prefill
