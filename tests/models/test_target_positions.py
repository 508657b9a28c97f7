"""decoder_only ``target_positions="restart"`` / ``"pairs"``: a prefix LM that numbers its target again.

References: hand-computed position ids; the model against the same weights run with those
positions and the segment embedding added by hand (the option's definition); perturbation
(causality), cached steps == full forward, generate cached == uncached, left-padded batch == one
row at a time, packed row == segments alone, save/load, gradients, one-line config errors.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import t5lab  # noqa: F401  (registers the variants with the Auto classes)
from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM
from t5lab.models.positions import restart_position_ids
from t5lab.models.t5core import CACHE_FIELD

TOL = dict(atol=1e-5, rtol=1e-5)
VOCAB = 40
TINY = dict(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2, dropout_rate=0.0,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, max_position_embeddings=32, prefix_lm=True)
ENCODINGS = ["absolute", "sinusoidal", "rotary"]
MODES = ["restart", "pairs"]  # "pairs": a target position every second target token


def build(encoding: str = "absolute", mode: str = "restart", seed: int = 0) -> T5DecoderOnlyForCausalLM:
    torch.manual_seed(seed)
    config = T5DecoderOnlyConfig(**TINY, position_encoding=encoding, target_positions=mode)
    return T5DecoderOnlyForCausalLM(config).eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(2, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def prefix_of(ids: torch.Tensor, prefix: int) -> torch.Tensor:
    mask = torch.zeros_like(ids)
    mask[:, :prefix] = 1
    return mask


# ---------------------------------------------------------------------------------------------
# the position ids, by hand
# ---------------------------------------------------------------------------------------------


def test_restart_positions_hand_computed():
    prefix = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 0, 0]])
    real = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])  # row 1 left-padded by one
    assert restart_position_ids(prefix, real).tolist() == [[0, 1, 2, 1, 2], [0, 0, 1, 1, 2]]
    # the last 2 of 5 tokens after 3 cached ones
    assert restart_position_ids(prefix, real, length=2, past=3).tolist() == [[1, 2], [1, 2]]
    # without a padding mask every token is real
    assert restart_position_ids(torch.tensor([[1, 0, 0]])).tolist() == [[0, 1, 2]]


def test_pairs_positions_hand_computed():
    """``per=2``: ``s0 v0 s1 v1`` after a 3-token prefix get 0 1 1 2: the token predicting an output
    for input j (``s_j`` predicting ``v_j``, ``v_{j-1}`` predicting ``s_j``) carries j."""
    prefix = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0]])
    real = torch.tensor([[1] * 7, [0] + [1] * 6])  # row 1 left-padded by one
    assert restart_position_ids(prefix, real, per=2).tolist() == [[0, 1, 2, 0, 1, 1, 2], [0, 0, 1, 0, 1, 1, 2]]
    assert restart_position_ids(prefix, real, length=2, past=5, per=2).tolist() == [[1, 2], [1, 2]]
    segments = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 2, 2]])
    packed = torch.tensor([[1, 0, 0, 0, 1, 1, 0, 0, 0]])
    assert restart_position_ids(packed, None, segments, per=2).tolist() == [[0, 0, 1, 1, 0, 1, 0, 1, 1]]
    with pytest.raises(ValueError, match="per=0"):
        restart_position_ids(prefix, real, per=0)


def test_restart_positions_restart_in_each_packed_segment():
    segments = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 0]])
    prefix = torch.tensor([[1, 1, 0, 0, 1, 0, 0, 0]])
    real = (segments > 0).long()
    assert restart_position_ids(prefix, real, segments).tolist() == [[0, 1, 1, 2, 0, 1, 2, 0]]


# ---------------------------------------------------------------------------------------------
# the model against the option's definition
# ---------------------------------------------------------------------------------------------


# the positions each mode gives 4 input + 3 target / 3 input + 5 target tokens, by hand
HAND = {"restart": (4, [0, 1, 2, 3, 1, 2, 3]), "pairs": (3, [0, 1, 2, 0, 1, 1, 2, 2])}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_forward_is_the_stack_with_restarted_positions_and_segments(encoding, mode):
    model = build(encoding, mode)
    prefix_len, hand = HAND[mode]
    ids = tokens(2, len(hand))
    prefix = prefix_of(ids, prefix_len)
    positions = torch.tensor([hand] * 2)
    with torch.no_grad():
        logits = model(input_ids=ids, prefix_mask=prefix).logits
        # by hand: token embedding + segment row (0 input, 1 target), positions counted again
        embeds = model.shared(ids) + model.segment_embeddings(1 - prefix)
        # the same weights without the option, given the positions and segments explicitly
        plain = build(encoding, mode="continue")
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("segment")})
        reference = plain(inputs_embeds=embeds, prefix_mask=prefix, position_ids=positions).logits
    torch.testing.assert_close(logits, reference, **TOL)
    continued = plain(inputs_embeds=embeds, prefix_mask=prefix).logits  # positions 0..T-1: the option matters
    assert not torch.allclose(continued, logits, atol=1e-4)


def test_input_j_and_target_j_share_a_position_but_not_a_segment():
    model = build("absolute")
    ids = torch.tensor([[5, 6, 1, 6, 5]])  # `5 6 </s>` then the target `6 5`
    prefix = prefix_of(ids, 3)
    captured = {}
    hook = model.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(kwargs), with_kwargs=True
    )
    with torch.no_grad():
        model(input_ids=ids, prefix_mask=prefix)
    hook.remove()
    assert captured["position_ids"].tolist() == [[0, 1, 2, 1, 2]]
    embeds = captured["inputs_embeds"][0]
    segment = model.segment_embeddings.weight
    # token 6 at position 1 as input and as the first target token: only the segment row differs
    torch.testing.assert_close(embeds[3] - embeds[1], segment[1] - segment[0])


# ---------------------------------------------------------------------------------------------
# the shared behaviours
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_future_tokens_do_not_change_the_past(encoding, mode):
    model = build(encoding, mode)
    ids = tokens(2, 8)
    changed = ids.clone()
    changed[:, 5:] = tokens(2, 3, seed=7)
    prefix = prefix_of(ids, 3)
    with torch.no_grad():
        before = model(input_ids=ids, prefix_mask=prefix).logits
        after = model(input_ids=changed, prefix_mask=prefix).logits
    torch.testing.assert_close(after[:, :5], before[:, :5], **TOL)
    assert not torch.allclose(after[:, 5], before[:, 5], atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_cached_steps_equal_full_forward(encoding, mode):
    model = build(encoding, mode)
    ids = tokens(2, 8)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding: the restart counts real tokens only
    prefix = prefix_of(ids, 4) * mask
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, prefix_mask=prefix).logits
        out = model(input_ids=ids[:, :4], attention_mask=mask[:, :4], prefix_mask=prefix[:, :4], use_cache=True)
        steps, cache = [out.logits], getattr(out, CACHE_FIELD)
        for t in range(4, 8):
            out = model(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1], prefix_mask=prefix[:, :t + 1],
                        cache=cache, use_cache=True)
            cache = getattr(out, CACHE_FIELD)
            steps.append(out.logits)
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[real], full[real], **TOL)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_generate_cached_equals_uncached_and_left_padding_equals_one_by_one(encoding, mode):
    model = build(encoding, mode)
    rows = [tokens(1, 5, seed=4), tokens(1, 3, seed=5)]
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.zeros(2, 5, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, 5 - row.shape[1]:] = row
        mask[r, 5 - row.shape[1]:] = 1
    args = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    cached = model.generate(input_ids=ids, attention_mask=mask, use_cache=True, **args)
    assert torch.equal(cached, model.generate(input_ids=ids, attention_mask=mask, use_cache=False, **args))
    for r, row in enumerate(rows):
        alone = model.generate(input_ids=row, **args)
        assert torch.equal(cached[r, 5:], alone[0, row.shape[1]:])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_generate_is_the_greedy_continuation_of_the_full_forward(encoding, mode):
    """generate() must number the new tokens as a full forward over prompt + continuation does."""
    model = build(encoding, mode)
    prompt = torch.tensor([[0, 5, 6, 7, 1], [8, 9, 10, 11, 1]])  # row 0 left-padded
    mask = (prompt != 0).long()
    gen = model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=5, do_sample=False,
                         pad_token_id=0, eos_token_id=None, return_dict_in_generate=True, output_logits=True)
    out = gen.sequences
    full_mask = torch.cat([mask, torch.ones(2, 5, dtype=torch.long)], 1)
    prefix = torch.cat([mask, torch.zeros(2, 5, dtype=torch.long)], 1)
    with torch.no_grad():
        logits = model(input_ids=out, attention_mask=full_mask, prefix_mask=prefix).logits
    assert torch.equal(out[:, 5:], logits[:, 4:-1].argmax(-1))
    # the scores themselves: a tiny random model's argmax can hide wrong positions
    torch.testing.assert_close(torch.stack(gen.logits, 1), logits[:, 4:-1], **TOL)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_packed_row_equals_segments_alone(encoding, mode):
    model = build(encoding, mode)
    first, second = tokens(1, 5, seed=4), tokens(1, 3, seed=5)
    ids = torch.cat([first, second, torch.zeros(1, 1, dtype=torch.long)], 1)  # (1, 9), one pad
    segments = torch.tensor([[1] * 5 + [2] * 3 + [0]])
    prefix = torch.tensor([[1, 1, 0, 0, 0, 1, 1, 0, 0]])
    with torch.no_grad():
        packed = model(input_ids=ids, segment_ids=segments, prefix_mask=prefix).logits
        torch.testing.assert_close(packed[:, :5], model(input_ids=first, prefix_mask=prefix_of(first, 2)).logits, **TOL)
        torch.testing.assert_close(packed[:, 5:8], model(input_ids=second, prefix_mask=prefix_of(second, 2)).logits,
                                   **TOL)


def test_save_load_round_trip_and_gradients(tmp_path):
    model = build("absolute")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.target_positions == "restart"
    ids = tokens(2, 6)
    prefix = prefix_of(ids, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, prefix_mask=prefix).logits,
                                   model(input_ids=ids, prefix_mask=prefix).logits, **TOL)
    labels = ids.masked_fill(prefix.bool(), -100)
    model.train()
    model(input_ids=ids, prefix_mask=prefix, labels=labels).loss.backward()
    grad = model.segment_embeddings.weight.grad
    assert grad is not None and bool((grad.abs().sum(-1) > 0).all())  # both rows are used


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"target_positions": "reset"}, "target_positions='reset' is unknown"),
        ({"position_encoding": "relative"}, "has no position numbers"),
        ({"position_encoding": "none"}, "has no position numbers"),
        ({"prefix_lm": False}, "set prefix_lm=true"),
    ],
)
def test_config_rejects_settings_that_cannot_work_in_one_line(overrides, match):
    values = {**TINY, "position_encoding": "absolute", "target_positions": "restart", **overrides}
    with pytest.raises(ValueError, match=match) as info:
        T5DecoderOnlyConfig(**values)
    assert "\n" not in str(info.value)


def test_forward_without_a_prefix_mask_says_what_to_pass():
    with pytest.raises(ValueError, match="pass prefix_mask"):
        build()(input_ids=tokens(1, 4))


def test_harness_accepts_the_option():
    from t5lab.config import load_plans
    from t5lab.variants import get_variant

    options = {"prefix_lm": True, "position_encoding": "absolute", "target_positions": "restart"}
    get_variant("decoder_only").check_options(options)
    [(plan, _)] = load_plans(TRAIN_TINY)
    assert plan.cfg.model.options["target_positions"] == "restart"


TRAIN_TINY = {
    "name": "restart",
    "model": {"variant": "decoder_only", "d_model": 16, "d_ff": 32, "d_kv": 4, "num_heads": 2, "num_layers": 1,
              "options": {"prefix_lm": True, "position_encoding": "absolute", "target_positions": "restart"}},
    "data": {"task": "copy", "options": {"min_len": 2, "max_len": 4, "alphabet": "abcd"},
             "train": 16, "val": 4, "test": 4, "max_length": 8},
    "train": {"batch_size": 4, "max_steps": 1, "progress_bar": False, "num_samples": 1},
    "trainer": {"num_threads": 1},
}


@pytest.mark.slow
def test_train_with_restart_on_relative_positions_is_a_one_line_config_error(tmp_path, monkeypatch):
    import copy

    from t5lab.errors import ConfigError
    from t5lab.train import train

    monkeypatch.chdir(tmp_path)
    tiny = copy.deepcopy(TRAIN_TINY)
    tiny["model"]["options"]["position_encoding"] = "relative"
    with pytest.raises(ConfigError, match="has no position numbers") as info:
        train(tiny, out="runs")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.safetensors"))
