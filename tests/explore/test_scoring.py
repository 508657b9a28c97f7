"""perplexity() == exp(hand-computed token-weighted NLL) on ragged batches; hidden states."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

import t5lab
from t5lab.errors import T5LabError
from t5lab.explore.scoring import text_batches
from tests.explore.conftest import byte_tokenizer, tiny_gpt2, tiny_t5

TEXTS = ["a", "hello world!", "abc", "the quick brown fox"]  # ragged lengths


@torch.no_grad()
def hand_nll(model, tokenizer, text: str, source: str = "") -> tuple[float, int]:
    """Sum of token NLLs and token count for one text, run alone (no padding at all)."""
    if model.config.is_encoder_decoder:
        enc = tokenizer([source], return_tensors="pt")
        labels = tokenizer([text], return_tensors="pt")["input_ids"]
        logp = model(**enc, labels=labels).logits.log_softmax(-1)[0]  # (S, V)
        return -float(logp.gather(-1, labels[0][:, None]).sum()), labels.shape[1]
    # t5lab's causal-LM formulation of a bare text: `</s> text </s>`, the first </s> acting as BOS
    eos = tokenizer.eos_token_id
    ids = torch.tensor([[eos] + tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]])
    logp = model(input_ids=ids).logits.log_softmax(-1)[0, :-1]  # position t predicts t + 1
    return -float(logp.gather(-1, ids[0, 1:, None]).sum()), ids.shape[1] - 1


@pytest.mark.parametrize("make", [tiny_t5, tiny_gpt2], ids=["t5", "gpt2"])
def test_perplexity_is_token_weighted_over_the_whole_set(make):
    model, tokenizer = make(), byte_tokenizer()
    per_text = [hand_nll(model, tokenizer, t) for t in TEXTS]
    total, count = sum(n for n, _ in per_text), sum(c for _, c in per_text)
    # batch_size=3 leaves a ragged last batch: a mean of batch means would differ
    result = t5lab.perplexity(model, tokenizer, TEXTS, per_token=True, batch_size=3)
    assert result.tokens == count
    assert result.mean == pytest.approx(math.exp(total / count), rel=1e-5)
    seq_ppl = [math.exp(n / c) for n, c in per_text]
    assert result.max == pytest.approx(max(seq_ppl), rel=1e-5)
    assert result.min == pytest.approx(min(seq_ppl), rel=1e-5)
    assert [len(v) for v in result.per_token] == [c for _, c in per_text]
    assert float(sum(v.sum() for v in result.per_token)) == pytest.approx(total, rel=1e-5)
    batch_means = []
    for batch in text_batches(model, tokenizer, TEXTS, 3):
        r = t5lab.perplexity(model, tokenizer, [batch])
        batch_means.append(r.loss)
    assert result.loss != pytest.approx(sum(batch_means) / len(batch_means), rel=1e-6)


def test_perplexity_of_pairs_scores_only_the_target_and_accepts_a_dataloader():
    model, tokenizer = tiny_gpt2(), byte_tokenizer()
    pairs = [("abc", "def"), ("x", "yz!")]
    result = t5lab.perplexity(model, tokenizer, pairs)
    # reference: full text through the model, NLL of the target tokens only
    total, count = 0.0, 0
    with torch.no_grad():
        for src, tgt in pairs:
            s = tokenizer(src)["input_ids"]  # `src </s>`: input and separator, not scored
            t = tokenizer(tgt)["input_ids"]  # `tgt </s>`: scored
            ids = torch.tensor([s + t])
            logp = model(input_ids=ids).logits.log_softmax(-1)[0]
            for pos in range(len(s), len(s) + len(t)):
                total -= float(logp[pos - 1, ids[0, pos]])
                count += 1
    assert result.tokens == count
    assert result.mean == pytest.approx(math.exp(total / count), rel=1e-5)
    loader = list(text_batches(model, tokenizer, pairs, batch_size=1))
    assert t5lab.perplexity(model, tokenizer, loader).mean == pytest.approx(result.mean, rel=1e-6)


def test_perplexity_errors():
    model, tokenizer = tiny_t5(), byte_tokenizer()
    with pytest.raises(T5LabError, match="no texts"):
        t5lab.perplexity(model, tokenizer, [])


@torch.no_grad()
def test_hidden_states_have_one_tensor_per_layer_and_the_padding_mask():
    tokenizer = byte_tokenizer()
    t5 = tiny_t5()
    hs = t5lab.hidden_states(t5, tokenizer, ["ab", "hello"], targets=["xyz", "q"])
    assert len(hs.encoder) == t5.config.num_layers + 1 and len(hs.decoder) == t5.config.num_decoder_layers + 1
    assert hs.encoder[0].shape == (2, 6, 32) and hs.encoder_mask.tolist()[0] == [1, 1, 1, 0, 0, 0]
    assert hs.tokens[0] == ["a", "b", "</s>"]
    # the last encoder state is the encoder output itself
    enc = tokenizer(["ab", "hello"], padding=True, return_tensors="pt")
    assert_close(hs.encoder[-1], t5.get_encoder()(**enc).last_hidden_state)
    gpt2 = tiny_gpt2()
    hs = t5lab.hidden_states(gpt2, tokenizer, ["ab", "hello"])
    assert hs.encoder is None and len(hs.decoder) == gpt2.config.n_layer + 1
    assert hs.decoder_mask.sum(-1).tolist() == [3, 6]  # `text </s>`, left-padded


def test_perplexity_accepts_wrapped_evaluation_batches_with_padding_rows():
    model, tokenizer = tiny_t5(), byte_tokenizer()
    plain = list(text_batches(model, tokenizer, TEXTS, batch_size=4))
    # the harness's eval batches: {"index", "batch"}; index -1 marks rows added to even out ranks
    wrapped = [{"index": torch.tensor([0, 1, 2, -1]), "batch": plain[0]}]
    expected = t5lab.perplexity(model, tokenizer, TEXTS[:3])
    result = t5lab.perplexity(model, tokenizer, wrapped)
    assert result.tokens == expected.tokens and result.mean == pytest.approx(expected.mean, rel=1e-6)
