"""respond_to_batch: re-scoring reproduces sampled log-probs; EOS masking; cached == uncached."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, T5ForConditionalGeneration

from t5lab.rl.sampler import forward_responses, process_logits, respond_to_batch, score_responses
from tests.conftest import TINY_T5
from tests.rl.conftest import tiny_value_model

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


def _decoder_only(prefix_lm: bool):
    from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM

    torch.manual_seed(0)
    cfg = {k: v for k, v in TINY_T5.items() if k != "num_decoder_layers"}
    return T5DecoderOnlyForCausalLM(T5DecoderOnlyConfig(**cfg, prefix_lm=prefix_lm)).eval()


def _model(kind: str, tiny_t5):
    if kind == "t5":
        return tiny_t5
    if kind == "pseudo_dec":
        from t5lab.models.pseudo_decoder import T5PseudoDecConfig, T5PseudoDecForConditionalGeneration

        torch.manual_seed(0)
        return T5PseudoDecForConditionalGeneration(T5PseudoDecConfig(**TINY_T5)).eval()
    if kind == "gpt2":
        return _gpt2()
    if kind.startswith("value_"):
        return tiny_value_model(kind.removeprefix("value_"))
    return _decoder_only(prefix_lm=kind == "prefix_lm")


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4, eos_token_id=1,
                     pad_token_id=0, bos_token_id=1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: f"T{s['temperature']}-k{s['top_k']}-p{s['top_p']}")
@pytest.mark.parametrize(
    "kind",
    ["t5", "pseudo_dec", "decoder_only", "prefix_lm", "gpt2", "value_t5", "value_pseudo_dec", "value_decoder_only"],
)
def test_rescoring_reproduces_sampled_logprobs(tiny_t5, kind, settings):
    model = _model(kind, tiny_t5)
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


@pytest.mark.parametrize("kind", ["decoder_only", "prefix_lm", "gpt2"])
def test_causal_left_alignment_matches_unpadded_rows(tiny_t5, kind):
    """Batched prompts of different lengths give each row the logits it gets alone, unpadded."""
    model = _model(kind, tiny_t5)
    ids, mask = _prompts()
    resp = torch.randint(2, 64, (4, 5))
    batched = forward_responses(model, ids, mask, resp).logits
    for row in range(4):
        n = int(mask[row].sum())
        kwargs = {}
        if kind == "prefix_lm":
            kwargs["prefix_mask"] = torch.cat([torch.ones(n), torch.zeros(5)]).long()[None]
        alone = model(input_ids=torch.cat([ids[row, :n], resp[row]])[None], **kwargs).logits[0, n - 1 : n - 1 + 5]
        torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-5)


def test_prefix_lm_prompt_is_bidirectional(tiny_t5):
    """For a prefix LM the first response logits depend on the whole prompt (it is the prefix)."""
    plain, prefix = _model("decoder_only", tiny_t5), _model("prefix_lm", tiny_t5)
    ids, mask = _prompts()
    resp = torch.randint(2, 64, (4, 3))
    a = forward_responses(prefix, ids, mask, resp).logits
    b = forward_responses(plain, ids, mask, resp).logits
    assert not torch.allclose(a, b)


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


@pytest.mark.parametrize("kind", ["value_t5", "value_pseudo_dec", "value_decoder_only", "value_prefix_lm"])
def test_value_head_models_give_aligned_values(tiny_t5, kind):
    """Values come back per response token, and the logits equal the plain forward's."""
    model = _model(kind, tiny_t5)
    ids, mask = _prompts()
    resp = torch.randint(2, 64, (4, 5))
    fwd = forward_responses(model, ids, mask, resp)
    assert fwd.values.shape == (4, 5) and fwd.values.dtype == torch.float32
    # a value at step t may not depend on response tokens >= t (it is the state before token t)
    changed = resp.clone()
    changed[:, 3:] = (changed[:, 3:] + 7) % 60 + 2
    fwd2 = forward_responses(model, ids, mask, changed)
    torch.testing.assert_close(fwd.values[:, :4], fwd2.values[:, :4])
    torch.testing.assert_close(fwd.logits[:, :4], fwd2.logits[:, :4])
    assert not torch.allclose(fwd.values[:, 4], fwd2.values[:, 4])
