"""respond_to_batch: re-scoring reproduces sampled log-probs; EOS masking; cached == uncached."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, T5ForConditionalGeneration

from t5lab.rl.sampler import forward_responses, process_logits, respond_to_batch, score_responses

SETTINGS = [
    dict(temperature=1.0, top_k=None, top_p=None),
    dict(temperature=0.7, top_k=None, top_p=None),
    dict(temperature=1.3, top_k=5, top_p=None),
    dict(temperature=1.0, top_k=None, top_p=0.8),
    dict(temperature=0.9, top_k=10, top_p=0.9),
]


def _prompts(vocab: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (4, 7), generator=g)
    mask = torch.ones_like(ids)
    for row, length in enumerate([7, 4, 2, 5]):  # right padding
        ids[row, length:] = 0
        mask[row, length:] = 0
    return ids, mask


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4, eos_token_id=1,
                     pad_token_id=0, bos_token_id=1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"T{s['temperature']}-k{s['top_k']}-p{s['top_p']}")
@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_rescoring_reproduces_sampled_logprobs(tiny_t5, kind, settings):
    model = tiny_t5 if kind == "t5" else _gpt2()
    ids, mask = _prompts()
    out = respond_to_batch(model, ids, mask, max_new_tokens=12, generator=torch.Generator().manual_seed(3), **settings)
    assert out.response_ids.shape == out.response_mask.shape == out.logprobs.shape
    rescored = score_responses(model, ids, mask, out.response_ids, out.response_mask, **settings)
    torch.testing.assert_close(rescored, out.logprobs, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(out.logprobs).all()
    assert (out.logprobs[out.response_mask.bool()] <= 0).all()


def test_tokens_after_eos_are_masked_and_padded(tiny_t5):
    # make EOS likely so that rows end at different steps
    with torch.no_grad():
        tiny_t5.lm_head.weight[1] *= 3.0
    ids, mask = _prompts()
    out = respond_to_batch(tiny_t5, ids, mask, max_new_tokens=20, generator=torch.Generator().manual_seed(0))
    finished = 0
    for row in range(ids.shape[0]):
        eos_pos = (out.response_ids[row] == 1).nonzero()
        if len(eos_pos) == 0:
            assert out.response_mask[row].all()
            continue
        finished += 1
        first = int(eos_pos[0])
        assert out.response_mask[row, : first + 1].all()  # EOS itself was sampled and is scored
        assert not out.response_mask[row, first + 1 :].any()
        assert (out.response_ids[row, first + 1 :] == 0).all()
        assert (out.logprobs[row, first + 1 :] == 0).all()
    assert finished >= 2


def test_sampling_is_reproducible_with_a_generator(tiny_t5):
    ids, mask = _prompts()
    a = respond_to_batch(tiny_t5, ids, mask, max_new_tokens=8, generator=torch.Generator().manual_seed(5))
    b = respond_to_batch(tiny_t5, ids, mask, max_new_tokens=8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.response_ids, b.response_ids)


def test_t5_response_logits_match_hf_labels_forward(tiny_t5):
    """forward_responses aligns logits the way transformers' own labels= forward does."""
    ids, mask = _prompts()
    resp = torch.randint(2, 64, (4, 6))
    fwd = forward_responses(tiny_t5, ids, mask, resp)
    ref = tiny_t5(input_ids=ids, attention_mask=mask, labels=resp).logits
    torch.testing.assert_close(fwd.logits, ref)


def test_gpt2_left_alignment_matches_unpadded_rows():
    model = _gpt2()
    ids, mask = _prompts()
    resp = torch.randint(2, 64, (4, 5))
    batched = forward_responses(model, ids, mask, resp).logits
    for row in range(4):
        n = int(mask[row].sum())
        alone = model(input_ids=torch.cat([ids[row, :n], resp[row]])[None]).logits[0, n - 1 : n - 1 + 5]
        torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-5)


def test_process_logits_matches_closed_form():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    out = process_logits(logits, temperature=2.0, top_k=2)
    torch.testing.assert_close(out[0, :2], torch.tensor([1.0, 0.5]))
    assert torch.isinf(out[0, 2:]).all()
    # top-p 0.7 keeps the two best tokens: p = softmax = [.644, .237, .087, .032]
    kept = torch.isfinite(process_logits(logits, top_p=0.7))[0]
    assert kept.tolist() == [True, True, False, False]


@pytest.mark.parametrize("bad", [dict(temperature=0.0), dict(top_k=-1), dict(top_p=1.5), dict(max_new_tokens=0)])
def test_bad_sampling_arguments_raise(tiny_t5, bad):
    ids, mask = _prompts()
    with pytest.raises(ValueError):
        respond_to_batch(tiny_t5, ids, mask, **{"max_new_tokens": 4, **bad})


def test_all_pad_prompt_raises(tiny_t5: T5ForConditionalGeneration):
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="no real token"):
        respond_to_batch(tiny_t5, ids, torch.zeros_like(ids), max_new_tokens=2)
