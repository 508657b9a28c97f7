"""Formulations: records -> batches per variant; token-weighted losses against HF's own losses."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from t5lab.formulation import (
    IGNORE,
    Formulation,
    classification_loss,
    decoded_text,
    decoding_matches,
    token_loss,
)
from t5lab.tasks import Labelled, Pair
from t5lab.tokenizers import build_tokenizer, sentinel_ids


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("char", alphabet="abcdefghij ")


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


RECORDS = [Pair("abc", "cba"), Pair("hijab", "bajih")]


def test_seq2seq_batch(tok):
    f = Formulation("seq2seq", tok, max_length=16)
    batch = f.collate(f.encode_all(RECORDS))
    eos = tok.eos_token_id
    assert batch["input_ids"][0].tolist() == ids(tok, "abc") + [eos, 0, 0]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
    assert batch["labels"][0].tolist() == ids(tok, "cba") + [eos, IGNORE, IGNORE]
    assert batch["labels"][1].tolist() == ids(tok, "bajih") + [eos]
    assert set(batch) == {"input_ids", "attention_mask", "labels"}


def test_causal_lm_loss_on_target_only_and_on_everything(tok):
    eos = tok.eos_token_id
    f = Formulation("causal_lm", tok, max_length=16)
    e = f.encode(Pair("ab", "ba"))
    assert e.input_ids == ids(tok, "ab") + [eos] + ids(tok, "ba") + [eos]
    # labels aligned with input_ids (the model shifts): no loss on the input and the separator
    assert e.labels == [IGNORE, IGNORE, IGNORE] + ids(tok, "ba") + [eos]
    f_all = Formulation("causal_lm", tok, max_length=16, loss_on="all")
    e_all = f_all.encode(Pair("ab", "ba"))
    assert e_all.labels == [IGNORE] + e_all.input_ids[1:]
    assert "prefix_mask" not in f.collate([e])


def test_prefix_lm_batch_and_left_padded_prompts(tok):
    f = Formulation("prefix_lm", tok, max_length=16)
    examples = f.encode_all(RECORDS)
    batch = f.collate(examples)
    assert batch["prefix_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert batch["prefix_mask"].shape == batch["input_ids"].shape
    prompts = f.collate_prompts(examples)
    eos = tok.eos_token_id
    assert prompts["input_ids"][0].tolist() == [0, 0] + ids(tok, "abc") + [eos]  # left padding
    assert prompts["attention_mask"][0].tolist() == [0, 0, 1, 1, 1, 1]
    assert torch.equal(prompts["prefix_mask"], prompts["attention_mask"])


def test_truncation_keeps_eos(tok):
    f = Formulation("seq2seq", tok, max_length=4)
    e = f.encode(Pair("abcdefgh", "hgfedcba"))
    assert len(e.input_ids) == 4 and e.input_ids[-1] == tok.eos_token_id
    assert len(e.labels) == 4 and e.labels[-1] == tok.eos_token_id


def _abc_hij(tok, kind, **flag):
    """``abc -> hij`` encoded with one target option: the prompt, reference and source stay the
    plain formulation's, and the target decodes back to ``hij``."""
    plain = Formulation(kind, tok, max_length=16).encode(Pair("abc", "hij"))
    f = Formulation(kind, tok, max_length=16, **flag)
    e = f.encode(Pair("abc", "hij"))
    assert f.decode(e.target) == "hij"
    assert e.prompt == plain.prompt and e.reference == "hij" and e.source == "abc"
    return f, e


@pytest.mark.parametrize("kind", ["seq2seq", "prefix_lm", "causal_lm"])
def test_reverse_target_writes_the_target_backwards_and_keeps_the_reference(tok, kind):
    eos = tok.eos_token_id
    _, e = _abc_hij(tok, kind, reverse_target=True)
    assert e.target == ids(tok, "jih") + [eos]  # eos stays last
    assert e.labels[-4:] == ids(tok, "jih") + [eos]
    # exact match is unchanged: a decoding equals the reversed reference iff its reverse equals the reference
    assert decoding_matches([ids(tok, "jih") + [eos]], [e.target], eos)[0] == 1
    assert decoding_matches([ids(tok, "hij") + [eos]], [e.target], eos)[0] == 0
    # shown in the task's own order: up to eos, padding dropped, turned back
    assert decoded_text(tok, ids(tok, "jih") + [eos, 0] + ids(tok, "a"), reverse_target=True) == "hij"
    assert decoded_text(tok, [0] + ids(tok, "jih") + [eos]) == "jih"


@pytest.mark.parametrize("kind", ["seq2seq", "prefix_lm", "causal_lm"])
def test_echo_input_writes_each_input_token_before_its_target_token(tok, kind):
    eos = tok.eos_token_id
    _, e = _abc_hij(tok, kind, echo_input=True)
    a, b, c, h, i, j = (ids(tok, x)[0] for x in "abchij")
    assert e.target == [a, h, b, i, c, j, eos]  # s0 v0 s1 v1 s2 v2 </s>
    assert e.labels[-7:] == e.target
    # scored on the target tokens only
    assert decoding_matches([e.target], [e.target], eos, echo_input=True)[0] == 1
    wrong_echo = [a, h, a, i, a, j, eos]  # the outputs right, the echoed inputs wrong: still exact
    assert decoding_matches([wrong_echo], [e.target], eos, echo_input=True) == (1, 4, 4)
    assert decoding_matches([wrong_echo], [e.target], eos) == (0, 5, 7)  # without the flag: every token
    wrong_value = [a, h, b, h, c, j, eos]
    assert decoding_matches([wrong_value], [e.target], eos, echo_input=True) == (0, 3, 4)
    assert decoding_matches([[a, h, b, i]], [e.target], eos, echo_input=True) == (0, 2, 4)  # stopped early
    assert decoded_text(tok, [a, h, b, i, eos, 0, c], echo_input=True) == "hi"


def test_echo_input_needs_one_target_token_per_input_token(tok):
    from t5lab.errors import ConfigError

    f = Formulation("seq2seq", tok, max_length=16, echo_input=True)
    with pytest.raises(ConfigError, match=r"record 7 has 3 input and 2 target tokens") as err:
        f.encode(Pair("abc", "hi"), index=7)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"record 1 has 2 input and 3 target tokens"):
        f.encode_all([Pair("ab", "hi"), Pair("ab", "hij")])


def test_classification_labels(tok):
    single = Formulation("classification", tok, max_length=8, num_labels=3, problem_type="single_label_classification")
    b = single.collate(single.encode_all([Labelled("abc", 2), Labelled("de", 0)]))
    assert b["labels"].tolist() == [2, 0] and b["labels"].dtype == torch.long
    multi = Formulation("classification", tok, max_length=8, num_labels=3, problem_type="multi_label_classification")
    b = multi.collate(multi.encode_all([Labelled("abc", [0, 2])]))
    assert b["labels"].tolist() == [[1.0, 0.0, 1.0]]
    reg = Formulation("classification", tok, max_length=8, num_labels=1, problem_type="regression")
    b = reg.collate(reg.encode_all([Labelled("abc", 0.5)]))
    assert b["labels"].dtype == torch.float and b["labels"].tolist() == [0.5]


def test_text_objectives(tok):
    text = Pair("", "abc def ghij")
    causal = Formulation("causal_lm", tok, max_length=32, text_objective="causal_lm").encode(text)
    assert causal.prompt == [tok.eos_token_id]  # empty input: eos acts as BOS
    prefix = Formulation("seq2seq", tok, max_length=32, text_objective="prefix_lm", seed=3).encode(text)
    assert prefix.source + prefix.reference == "abc def ghij" and prefix.source and prefix.reference
    span = Formulation("seq2seq", tok, max_length=32, text_objective="span_corruption", noise_density=0.3).encode(text, 1)
    sentinels = set(sentinel_ids(tok))
    assert any(t in sentinels for t in span.input_ids) and span.labels[0] in sentinels
    again = Formulation("seq2seq", tok, max_length=32, text_objective="span_corruption", noise_density=0.3).encode(text, 1)
    assert again.input_ids == span.input_ids  # deterministic per (seed, index)


def _tiny_t5(vocab):
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2, decoder_start_token_id=0)
    return T5ForConditionalGeneration(cfg).eval()


def _tiny_gpt2(vocab):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=64)).eval()


def test_token_loss_equals_hf_loss_seq2seq(tok):
    f = Formulation("seq2seq", tok, max_length=16)
    batch = f.collate(f.encode_all(RECORDS))
    out = _tiny_t5(len(tok))(**batch)
    loss_sum, n, _ = token_loss("seq2seq", out.logits, batch["labels"])
    assert n.item() == (batch["labels"] != IGNORE).sum().item() == 4 + 6
    torch.testing.assert_close(loss_sum / n, out.loss)


def test_token_loss_equals_hf_loss_causal(tok):
    f = Formulation("causal_lm", tok, max_length=16)
    batch = f.collate(f.encode_all(RECORDS))
    out = _tiny_gpt2(len(tok))(**batch)  # HF shifts labels inside the model
    loss_sum, n, _ = token_loss("causal_lm", out.logits, batch["labels"])
    torch.testing.assert_close(loss_sum / n, out.loss)


def test_split_loss_is_token_weighted_not_mean_of_batch_means(tok):
    f = Formulation("seq2seq", tok, max_length=16)
    model = _tiny_t5(len(tok))
    records = [Pair("a", "b"), Pair("abcdefgh", "hgfedcba")]
    per_batch = []
    for r in records:  # two batches with 2 and 9 target tokens
        b = f.collate(f.encode_all([r]))
        per_batch.append(token_loss("seq2seq", model(**b).logits, b["labels"]))
    total = sum(s for s, _, _ in per_batch) / sum(n for _, n, _ in per_batch)
    both = f.collate(f.encode_all(records))
    reference = model(**both).loss  # one batch: HF's mean over all 11 label tokens
    torch.testing.assert_close(total, reference)
    mean_of_means = sum(s / n for s, n, _ in per_batch) / 2
    assert not math.isclose(float(mean_of_means), float(reference), rel_tol=1e-4)


def test_classification_loss_closed_form():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]])
    labels = torch.tensor([0, 0, 1])
    loss, n, correct = classification_loss(logits, labels, "single_label_classification")
    expected = -(torch.log_softmax(logits, -1)[torch.arange(3), labels]).sum()
    torch.testing.assert_close(loss, expected)
    assert n.item() == 3 and correct.item() == 2
    loss, n, _ = classification_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 2.0]), "regression")
    assert loss.item() == pytest.approx(2.0)


def test_decoding_matches_closed_form():
    eos, pad = 1, 0
    target = [[5, 6, 7, eos], [5, 6, eos, IGNORE], [8, eos, IGNORE, IGNORE], [5, 6, 7, eos]]
    pred = [
        [5, 6, 7, eos, pad],  # right: 4 of 4, exact
        [5, 9, eos, pad, pad],  # one wrong token: 2 of 3
        [8, 8, eos, pad, pad],  # runs long: 1 of 2 (the eos position holds an 8), not exact
        [5, 6],  # stops early, no eos: 2 of 4
    ]
    assert decoding_matches(pred, target, eos) == (1, 4 + 2 + 1 + 2, 4 + 3 + 2 + 4)
    # tokens after the first eos are padding, never compared
    assert decoding_matches([[5, eos, 5, 6]], [[5, eos]], eos) == (1, 2, 2)
    assert decoding_matches([], [], eos) == (0, 0, 0)


def test_importable_without_lightning():
    code = "import sys, t5lab.formulation, t5lab.config; assert 'lightning' not in sys.modules, 'lightning imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_collate_packed_layout_closed_form(tok):
    """Three seq2seq examples, rows as long as the longest: the two short ones share a row."""
    f = Formulation("seq2seq", tok, max_length=16)
    examples = f.encode_all([Pair("abcd", "dcba"), Pair("a", "b"), Pair("ab", "ba")])
    batch = f.collate_packed(examples)
    eos = tok.eos_token_id
    assert set(batch) == {"input_ids", "segment_ids", "labels", "decoder_segment_ids"}
    # FFD by summed length: "abcd"(5+5) opens row 0, "ab"(3+3) does not fit: row 1, then "a"(2+2) joins it
    assert batch["input_ids"].tolist() == [ids(tok, "abcd") + [eos], ids(tok, "ab") + [eos] + ids(tok, "a") + [eos]]
    assert batch["segment_ids"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 2, 2]]
    assert batch["labels"].tolist() == [ids(tok, "dcba") + [eos], ids(tok, "ba") + [eos] + ids(tok, "b") + [eos]]
    assert batch["decoder_segment_ids"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 2, 2]]
    # a fixed pack_length: every row that long, rows padded up to the batch size (< 8 examples)
    fixed = f.collate_packed(examples, pack_length=12)
    assert fixed["input_ids"].shape == (3, 12) and fixed["segment_ids"][1:].eq(0).all()


def test_collate_packed_prefix_mask_per_segment(tok):
    f = Formulation("prefix_lm", tok, max_length=16)
    examples = f.encode_all([Pair("a", "b"), Pair("ab", "c")])
    batch = f.collate_packed(examples, pack_length=12)
    # "ab</s>c</s>" (5) first, then "a</s>b</s>" (4): each segment's prefix is its input + separator
    assert batch["prefix_mask"][0].tolist() == [1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    assert batch["segment_ids"][0].tolist() == [1, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0]


@pytest.mark.parametrize("kind", ["seq2seq", "causal_lm", "prefix_lm"])
def test_encode_all_with_the_char_fast_path_equals_the_tokenizer(tok, kind):
    """encode_all takes the dict-lookup path for a char tokenizer: same examples as the tokenizer's."""
    records = [Pair("abc", "cba"), Pair("a</s>bz" * 3, "j" * 30), Pair("", "q"), Pair("é", "hij ab")]
    fast = Formulation(kind, tok, max_length=12)
    slow = Formulation(kind, tok, max_length=12)
    slow._char_encoder = None  # the tokenizer path
    assert fast._char_encoder is not None
    assert fast.encode_all(records) == slow.encode_all(records)
