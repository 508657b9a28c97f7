"""decoder_only ``target_positions="digits"``: abacus-style positions (a digit's significance).

References: hand-computed position ids (McLeish et al. 2024's definition, with the prefix read most
significant digit first and the target least significant first); the model against the same
weights run with those positions and the segment embedding added by hand; perturbation
(causality), cached steps == full forward, generate cached == uncached and == the greedy
continuation of the full forward, left-padded batch == one row at a time, packed row == segments
alone, save/load, one-line errors.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import t5lab  # noqa: F401  (registers the variants with the Auto classes)
from t5lab.errors import ConfigError
from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM
from t5lab.models.positions import digit_position_ids
from t5lab.models.t5core import CACHE_FIELD
from t5lab.tokenizers import build_tokenizer

TOL = dict(atol=1e-5, rtol=1e-5)
DIGITS = list(range(2, 12))  # ids 2..11 are the digits 0..9; 12 is "+", 1 eos, 0 pad
PLUS = 12
VOCAB = 14
NOT_DIGITS = [0, 1, PLUS, 13]  # suppressed in generate(): a random model's continuation is all digits
TINY = dict(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2, dropout_rate=0.0,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, max_position_embeddings=32, prefix_lm=True)
ENCODINGS = ["absolute", "sinusoidal", "rotary"]


def build(encoding: str = "absolute", mode: str = "digits", seed: int = 0) -> T5DecoderOnlyForCausalLM:
    torch.manual_seed(seed)
    extra = {"digit_token_ids": DIGITS} if mode == "digits" else {}
    config = T5DecoderOnlyConfig(**TINY, position_encoding=encoding, target_positions=mode, **extra)
    return T5DecoderOnlyForCausalLM(config).eval()


def d(text: str) -> list[int]:
    """Token ids of a string of digits, '+' and '|' (eos)."""
    return [PLUS if c == "+" else 1 if c == "|" else 2 + int(c) for c in text]


def prefix_of(ids: torch.Tensor, prefix: int) -> torch.Tensor:
    mask = torch.zeros_like(ids)
    mask[:, :prefix] = 1
    return mask


# ---------------------------------------------------------------------------------------------
# the position ids, by hand
# ---------------------------------------------------------------------------------------------


def test_digit_positions_hand_computed():
    # "123+45</s>" then the sum 168 written backwards: "861</s>"
    ids = torch.tensor([d("123+45|861|")])
    prefix = prefix_of(ids, 7)
    # prefix: significance counted from the end of each number; target: from its start; others 0
    want = [[3, 2, 1, 0, 2, 1, 0, 1, 2, 3, 0]]
    assert digit_position_ids(ids, prefix, torch.tensor(DIGITS)).tolist() == want


def test_digit_positions_padding_and_the_prefix_boundary():
    # left padding gets 0; a prefix that ends in digits and a target that starts with them are two numbers
    ids = torch.tensor([[0, 0] + d("45") + d("67|"), d("9+99") + d("801")[:3]])
    prefix = torch.tensor([[0, 0, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0]])
    real = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    got = digit_position_ids(ids, prefix, torch.tensor(DIGITS), real)
    assert got.tolist() == [[0, 0, 2, 1, 1, 2, 0], [1, 0, 2, 1, 1, 2, 3]]


def test_digit_positions_in_packed_rows_count_each_segment_apart():
    ids = torch.tensor([d("12|3|") + d("5+6|11|") + [0]])
    prefix = torch.tensor([[1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]])
    assert digit_position_ids(ids, prefix, torch.tensor(DIGITS)).tolist() == [[2, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 0, 0]]


def test_sum_digit_and_operand_digits_of_one_significance_share_a_position():
    model = build()
    ids = torch.tensor([d("123+45|861|")])
    captured = {}
    hook = model.decoder.register_forward_pre_hook(lambda m, a, kw: captured.update(kw), with_kwargs=True)
    with torch.no_grad():
        model(input_ids=ids, prefix_mask=prefix_of(ids, 7))
    hook.remove()
    positions = captured["position_ids"][0].tolist()
    assert positions[2] == positions[5] == positions[7] == 1  # units: 3, 5 and the sum's 8
    assert positions[0] == positions[9] == 3  # hundreds


# ---------------------------------------------------------------------------------------------
# the model against the option's definition
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_forward_is_the_stack_with_digit_positions_and_segments(encoding):
    model = build(encoding)
    ids = torch.tensor([d("123+45|861|"), d("9+9999|8001")])
    prefix = prefix_of(ids, 7)
    prefix[1, 6:] = 0
    positions = digit_position_ids(ids, prefix, torch.tensor(DIGITS))
    with torch.no_grad():
        logits = model(input_ids=ids, prefix_mask=prefix).logits
        embeds = model.shared(ids) + model.segment_embeddings(1 - prefix)
        plain = build(encoding, mode="continue")
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("segment")})
        reference = plain(inputs_embeds=embeds, prefix_mask=prefix, position_ids=positions).logits
        restarted = build(encoding, mode="restart")
        restarted.load_state_dict(model.state_dict())
        other = restarted(input_ids=ids, prefix_mask=prefix).logits
    torch.testing.assert_close(logits, reference, **TOL)
    assert not torch.allclose(other, logits, atol=1e-4)  # the numbering matters


# ---------------------------------------------------------------------------------------------
# the shared behaviours
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_future_tokens_do_not_change_the_past(encoding):
    model = build(encoding)
    ids = torch.tensor([d("123+45|861|")])
    changed = torch.tensor([d("123+45|86") + d("+7")])  # the target's last two tokens differ
    prefix = prefix_of(ids, 7)
    with torch.no_grad():
        before = model(input_ids=ids, prefix_mask=prefix).logits
        after = model(input_ids=changed, prefix_mask=prefix).logits
    torch.testing.assert_close(after[:, :9], before[:, :9], **TOL)
    assert not torch.allclose(after[:, 9], before[:, 9], atol=1e-4)


def test_cached_steps_with_the_positions_of_the_whole_sequence_equal_full_forward():
    model = build()
    ids = torch.tensor([[0, 0] + d("12+45|861"), d("1234+5|9231")])
    mask = (ids != 0).long()
    prefix = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0], [1] * 7 + [0] * 4])
    positions = digit_position_ids(ids, prefix, torch.tensor(DIGITS), mask)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, prefix_mask=prefix).logits
        out = model(input_ids=ids[:, :8], attention_mask=mask[:, :8], prefix_mask=prefix[:, :8], use_cache=True)
        steps, cache = [out.logits], getattr(out, CACHE_FIELD)
        for t in range(8, 11):
            out = model(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1], prefix_mask=prefix[:, :t + 1],
                        position_ids=positions[:, t:t + 1], cache=cache, use_cache=True)
            cache = getattr(out, CACHE_FIELD)
            steps.append(out.logits)
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[real], full[real], **TOL)


def test_a_cached_step_without_position_ids_says_what_to_pass():
    model = build()
    ids = torch.tensor([d("12+45|8")])
    out = model(input_ids=ids[:, :6], prefix_mask=prefix_of(ids, 6)[:, :6], use_cache=True)
    with pytest.raises(ValueError, match="pass position_ids") as info:
        model(input_ids=ids[:, 6:], prefix_mask=prefix_of(ids, 6), cache=getattr(out, CACHE_FIELD), use_cache=True)
    assert "\n" not in str(info.value)


def prompts() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    rows = [torch.tensor([d("123+4567|")]), torch.tensor([d("9+87|")])]
    width = max(r.shape[1] for r in rows)
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - row.shape[1]:] = row
        mask[r, width - row.shape[1]:] = 1
    return ids, mask, rows


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_generate_cached_equals_uncached_and_left_padding_equals_one_by_one(encoding):
    model = build(encoding)
    ids, mask, rows = prompts()
    args = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None, suppress_tokens=NOT_DIGITS)
    cached = model.generate(input_ids=ids, attention_mask=mask, use_cache=True, **args)
    assert torch.equal(cached, model.generate(input_ids=ids, attention_mask=mask, use_cache=False, **args))
    for r, row in enumerate(rows):
        alone = model.generate(input_ids=row, **args)
        assert torch.equal(cached[r, ids.shape[1]:], alone[0, row.shape[1]:])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_generate_is_the_greedy_continuation_of_the_full_forward(encoding):
    """generate() must number the new digits as a full forward over prompt + continuation does."""
    model = build(encoding)
    ids, mask, _ = prompts()
    new = 6
    gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                         pad_token_id=0, eos_token_id=None, suppress_tokens=NOT_DIGITS,
                         return_dict_in_generate=True, output_logits=True)
    out = gen.sequences
    assert bool(torch.isin(out[:, ids.shape[1]:], torch.tensor(DIGITS)).all())  # a number to count
    full_mask = torch.cat([mask, torch.ones(2, new, dtype=torch.long)], 1)
    prefix = torch.cat([mask, torch.zeros(2, new, dtype=torch.long)], 1)
    with torch.no_grad():
        logits = model(input_ids=out, attention_mask=full_mask, prefix_mask=prefix).logits
    width = ids.shape[1]
    torch.testing.assert_close(torch.stack(gen.logits, 1), logits[:, width - 1:-1], **TOL)


def test_packed_row_equals_segments_alone():
    model = build()
    first, second = torch.tensor([d("12+3|51")]), torch.tensor([d("7+8|51")])
    ids = torch.cat([first, second, torch.zeros(1, 1, dtype=torch.long)], 1)
    segments = torch.tensor([[1] * 7 + [2] * 6 + [0]])
    prefix = torch.tensor([[1] * 5 + [0] * 2 + [1] * 4 + [0] * 3])
    with torch.no_grad():
        packed = model(input_ids=ids, segment_ids=segments, prefix_mask=prefix).logits
        torch.testing.assert_close(packed[:, :7], model(input_ids=first, prefix_mask=prefix_of(first, 5)).logits,
                                   **TOL)
        torch.testing.assert_close(packed[:, 7:13],
                                   model(input_ids=second, prefix_mask=prefix_of(second, 4)).logits, **TOL)


def test_save_load_round_trip(tmp_path):
    model = build()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.target_positions == "digits" and loaded.config.digit_token_ids == DIGITS
    ids = torch.tensor([d("123+45|861|")])
    prefix = prefix_of(ids, 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, prefix_mask=prefix).logits,
                                   model(input_ids=ids, prefix_mask=prefix).logits, **TOL)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"digit_token_ids": None}, "set digit_token_ids"),
        ({"position_encoding": "relative"}, "has no position numbers"),
        ({"prefix_lm": False}, "set prefix_lm=true"),
    ],
)
def test_config_rejects_settings_that_cannot_work_in_one_line(overrides, match):
    values = {**TINY, "position_encoding": "absolute", "target_positions": "digits", "digit_token_ids": DIGITS,
              **overrides}
    with pytest.raises(ValueError, match=match) as info:
        T5DecoderOnlyConfig(**values)
    assert "\n" not in str(info.value)


def test_harness_fills_in_the_digit_ids_of_the_tokenizer():
    from t5lab.config import ModelConfig
    from t5lab.variants import BuildInfo, _digit_ids, get_variant

    tok = build_tokenizer("char", alphabet="0123456789+")
    ids = _digit_ids(tok)
    assert ids == tuple(tok(c, add_special_tokens=False)["input_ids"][0] for c in "0123456789")
    options = {"prefix_lm": True, "position_encoding": "absolute", "target_positions": "digits"}
    cfg = ModelConfig(variant="decoder_only", d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=1, options=options)
    model = get_variant("decoder_only").build(cfg, BuildInfo(vocab_size=len(tok), digit_token_ids=ids))
    assert model.config.digit_token_ids == list(ids)
    with pytest.raises(ConfigError, match="does not give each digit 0-9 a token of its own") as info:
        get_variant("decoder_only").build(cfg, BuildInfo(vocab_size=len(tok)))
    assert "\n" not in str(info.value)
    assert _digit_ids(build_tokenizer("char", alphabet="abc")) is None  # no digits: unknown tokens
    # word tokens: a digit alone carries the word-start mark, inside a number it does not
    words = build_tokenizer("word", texts=["1 2 3 4 5 6 7 8 9 0 12+34"] * 2)
    assert len(words("7", add_special_tokens=False)["input_ids"]) == 1 and _digit_ids(words) is None
