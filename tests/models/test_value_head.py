"""Value-head models: the LM's logits unchanged, values = head(last decoder hidden state), and the
PPO plumbing (detach/attach, loading from a plain LM checkpoint, save/load, generate, bf16).

Every model is tiny and fp32 unless a test says otherwise; references are the plain LM classes with
copied weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F  # noqa: N812
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    T5Config,
    T5ForConditionalGeneration,
)

import t5lab  # noqa: F401  (registers the model types with the Auto classes)
from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM
from t5lab.models.pseudo_decoder import T5PseudoDecConfig, T5PseudoDecForConditionalGeneration
from t5lab.models.value_head import (
    CausalLMOutputWithPastAndValue,
    Seq2SeqLMOutputWithValue,
    T5DecoderOnlyWithValueHead,
    T5DecoderOnlyWithValueHeadConfig,
    T5HeadWithValueModel,
    T5PseudoDecWithValueHead,
    T5PseudoDecWithValueHeadConfig,
    T5ValueHead,
    T5WithValueHeadConfig,
)
from tests.conftest import TINY_T5
from tests.models.helpers import enable_checkpointing, no_deprecation_warnings, output_cache

# ---------------------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    lm_config: type
    lm_model: type
    vh_config: type
    vh_model: type
    auto: type
    config_kwargs: dict[str, Any]
    seq2seq: bool

    def lm(self, seed: int = 0) -> Any:
        torch.manual_seed(seed)
        return self.lm_model(self.lm_config(**self.config_kwargs)).eval()

    def vh(self, seed: int = 1, **overrides: Any) -> Any:
        torch.manual_seed(seed)
        return self.vh_model(self.vh_config(**{**self.config_kwargs, **overrides})).eval()

    def batch(self, with_labels: bool = True) -> dict[str, torch.Tensor]:
        """Two rows, the second one padded, so masks matter."""
        g = torch.Generator().manual_seed(123)
        input_ids = torch.randint(2, 64, (2, 7), generator=g)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[1, 5:] = 0
        labels = torch.randint(2, 64, (2, 5 if self.seq2seq else 7), generator=g)
        if self.seq2seq:
            labels[1, 4:] = -100
            batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        else:
            input_ids[1, 5:] = 0
            labels = input_ids.masked_fill(attention_mask == 0, -100)
            labels[:, :3] = -100  # no loss on the prefix
            prefix_mask = torch.zeros_like(input_ids)
            prefix_mask[:, :3] = 1
            batch = {"input_ids": input_ids, "attention_mask": attention_mask, "prefix_mask": prefix_mask}
        if with_labels:
            batch["labels"] = labels
        return batch

    def output_len(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["labels"].shape[1] if self.seq2seq else batch["input_ids"].shape[1]


DECODER_ONLY_KWARGS = {k: v for k, v in TINY_T5.items() if k not in ("num_decoder_layers", "decoder_start_token_id")}

VARIANTS = [
    Variant(
        "t5", T5Config, T5ForConditionalGeneration, T5WithValueHeadConfig, T5HeadWithValueModel,
        AutoModelForSeq2SeqLM, TINY_T5, seq2seq=True,
    ),
    Variant(
        "pseudo_dec", T5PseudoDecConfig, T5PseudoDecForConditionalGeneration, T5PseudoDecWithValueHeadConfig,
        T5PseudoDecWithValueHead, AutoModelForSeq2SeqLM, TINY_T5, seq2seq=True,
    ),
    Variant(
        "decoder_only", T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM, T5DecoderOnlyWithValueHeadConfig,
        T5DecoderOnlyWithValueHead, AutoModelForCausalLM, DECODER_ONLY_KWARGS, seq2seq=False,
    ),
]


@pytest.fixture(params=VARIANTS, ids=lambda v: v.name)
def variant(request) -> Variant:
    return request.param


def copy_body(vh_model: Any, lm_model: Any) -> None:
    """Load the plain LM's weights into the value-head model; only the head may be left out."""
    result = vh_model.load_state_dict(lm_model.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["v_head.summary.bias", "v_head.summary.weight"]
    assert result.unexpected_keys == []


def last_decoder_hidden_state(variant: Variant, lm: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder stack's output of the plain LM, taken from ``output_hidden_states`` (not a hook)."""
    out = lm(**batch, output_hidden_states=True)
    hidden = out.decoder_hidden_states if variant.seq2seq else out.hidden_states
    return hidden[-1]  # (B, T, D), tied by transformers to the stack's last_hidden_state


# ---------------------------------------------------------------------------------------------------------
# Forward: logits unchanged, values = head(last decoder hidden state)
# ---------------------------------------------------------------------------------------------------------


def test_logits_and_loss_equal_plain_lm(variant):
    lm, vh = variant.lm(), variant.vh()
    copy_body(vh, lm)
    batch = variant.batch()
    with torch.no_grad():
        ref, out = lm(**batch), vh(**batch)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=0)
    assert isinstance(out, Seq2SeqLMOutputWithValue if variant.seq2seq else CausalLMOutputWithPastAndValue)


def test_values_are_head_of_last_decoder_hidden_state(variant):
    lm, vh = variant.lm(), variant.vh()
    copy_body(vh, lm)
    batch = variant.batch()
    with torch.no_grad():
        values = vh(**batch).value
        hidden = last_decoder_hidden_state(variant, lm, batch)  # (B, T, D)
        expected = F.linear(hidden, vh.v_head.summary.weight, vh.v_head.summary.bias).squeeze(-1)
    assert values.shape == (2, variant.output_len(batch))
    assert values.dtype == torch.float32
    torch.testing.assert_close(values, expected)
    # a head on the logits or on the embeddings would not match this reference
    assert not torch.allclose(values, torch.zeros_like(values))


def test_t5_values_match_an_explicit_decoder_stack_call():
    """Independent of output_hidden_states: run HF's encoder and decoder stacks by hand."""
    variant = VARIANTS[0]
    lm, vh = variant.lm(), variant.vh()
    copy_body(vh, lm)
    batch = variant.batch()
    with torch.no_grad():
        enc = lm.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        dec = lm.decoder(
            input_ids=lm._shift_right(batch["labels"]),
            encoder_hidden_states=enc,
            encoder_attention_mask=batch["attention_mask"],
        ).last_hidden_state  # (B, T_dec, D), after final_layer_norm
        expected = dec @ vh.v_head.summary.weight[0] + vh.v_head.summary.bias[0]
        torch.testing.assert_close(vh(**batch).value, expected)


def test_return_dict_false_gives_tuple_with_values_last(variant):
    vh = variant.vh()
    batch = variant.batch()
    with torch.no_grad():
        as_dict = vh(**batch)
        as_tuple = vh(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[-1], as_dict.value)
    torch.testing.assert_close(as_tuple[0], as_dict.loss)


def test_value_head_dropout_and_init():
    cfg = T5WithValueHeadConfig(**TINY_T5)
    assert T5ValueHead(cfg).dropout.p == cfg.dropout_rate
    assert T5ValueHead(T5WithValueHeadConfig(**TINY_T5, value_head_dropout=0.3)).dropout.p == 0.3
    # weight ~ N(0, (factor * scale)^2 / d_model), zero bias
    torch.manual_seed(0)
    model = T5HeadWithValueModel(T5WithValueHeadConfig(**{**TINY_T5, "d_model": 64, "initializer_factor": 2.0}))
    expected_std = 2.0 * 0.1 * 64**-0.5
    assert 0.7 * expected_std < model.v_head.summary.weight.std().item() < 1.3 * expected_std
    assert torch.count_nonzero(model.v_head.summary.bias) == 0


def test_initial_values_are_near_zero():
    """The decoder output has unit RMS at init, so RMS(values) ~ value_head_init_scale (0.1)."""
    torch.manual_seed(0)
    model = T5HeadWithValueModel(T5WithValueHeadConfig(**TINY_T5)).eval()
    zero = T5HeadWithValueModel(T5WithValueHeadConfig(**TINY_T5, value_head_init_scale=0.0)).eval()
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(2, 64, (4, 9), generator=g), "labels": torch.randint(2, 64, (4, 7), generator=g)}
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
        assert torch.count_nonzero(zero(**batch).value) == 0
    rms_hidden = out.decoder_hidden_states[-1].pow(2).mean(-1).sqrt()  # (B, T)
    torch.testing.assert_close(rms_hidden, torch.ones_like(rms_hidden), rtol=1e-4, atol=1e-4)
    assert 0.05 < out.value.pow(2).mean().sqrt().item() < 0.2


def test_value_head_dropout_is_active_in_train_mode():
    vh = VARIANTS[0].vh(value_head_dropout=0.5)
    batch = VARIANTS[0].batch()
    with torch.no_grad():
        eval_values = vh(**batch).value
        vh.train()
        torch.manual_seed(0)
        train_values = vh(**batch).value
    assert not torch.allclose(eval_values, train_values)


# ---------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------


def test_config_model_types_and_auto_registration(variant):
    cfg = variant.vh_config(**variant.config_kwargs)
    assert AutoConfig.for_model(cfg.model_type).__class__ is variant.vh_config
    # from the plain LM's config dict (model_type of the LM), the subclass's model type wins
    plain = variant.lm_config(**variant.config_kwargs).to_dict()
    assert plain["model_type"] != cfg.model_type
    loaded = variant.vh_config.from_dict(plain)
    assert loaded.model_type == cfg.model_type == loaded.to_dict()["model_type"]
    assert type(variant.auto.from_config(cfg)) is variant.vh_model


def test_plain_lm_config_becomes_the_value_head_config(variant):
    """``VHModel(LMConfig(...))`` works and saves as the value-head model type (so Auto loads the head)."""
    lm_config = variant.lm_config(**variant.config_kwargs, attn_implementation="eager")
    model = variant.vh_model(lm_config)
    assert type(model.config) is variant.vh_config
    assert model.config.model_type == variant.vh_config.model_type
    assert model.config._attn_implementation == "eager"
    for key, value in lm_config.to_dict().items():
        if key not in ("model_type", "architectures", "transformers_version"):
            assert getattr(model.config, key) == value, key


def test_pseudo_decoder_causal_lm_mode_values():
    """In causal-LM mode (labels == input_ids) the decoder runs over the whole input: values (B, S)."""
    variant = VARIANTS[1]
    lm, vh = variant.lm(), variant.vh()
    copy_body(vh, lm)
    ids = torch.randint(2, 64, (2, 6), generator=torch.Generator().manual_seed(5))
    batch = {"input_ids": ids, "labels": ids}
    with torch.no_grad():
        out, ref = vh(**batch), lm(**batch, output_hidden_states=True)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    expected = F.linear(ref.decoder_hidden_states[-1], vh.v_head.summary.weight, vh.v_head.summary.bias)
    assert out.value.shape == (2, 6)
    torch.testing.assert_close(out.value, expected.squeeze(-1))


@pytest.mark.parametrize("name", ["pseudo_dec", "decoder_only"])
def test_from_t5_checkpoint_gives_a_value_head_model(name, t5_checkpoint):
    """The LM classes' ``from_t5`` builds the value-head model (and config) when called on it."""
    variant = next(v for v in VARIANTS if v.name == name)
    model = variant.vh_model.from_t5(t5_checkpoint)
    assert type(model) is variant.vh_model
    assert type(model.config) is variant.vh_config
    assert {"v_head.summary.bias", "v_head.summary.weight"} <= set(model.load_report.new)
    reference = T5ForConditionalGeneration.from_pretrained(t5_checkpoint)
    torch.testing.assert_close(
        model.decoder.final_layer_norm.weight, reference.decoder.final_layer_norm.weight, rtol=0, atol=0
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("value_head_dropout", 1.5, "value_head_dropout=1.5 is not a probability"),
     ("value_head_init_scale", -1.0, "value_head_init_scale=-1.0 is negative")],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        T5WithValueHeadConfig(**TINY_T5, **{field: value})


# ---------------------------------------------------------------------------------------------------------
# detach_head / attach_head
# ---------------------------------------------------------------------------------------------------------


def _value_loss_grads(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    model(**batch).value.pow(2).sum().backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_detach_head_stops_body_gradients_and_attach_restores(variant):
    vh = variant.vh(value_head_init_scale=1.0)
    batch = variant.batch(with_labels=variant.seq2seq)  # seq2seq needs labels for the decoder inputs
    body = [n for n, _ in vh.named_parameters() if not n.startswith("v_head.")]
    assert body

    vh.detach_head()
    assert vh.head_detached
    grads = _value_loss_grads(vh, batch)
    for name in body:
        assert grads[name] is None or torch.count_nonzero(grads[name]) == 0, name
    assert torch.count_nonzero(grads["v_head.summary.weight"]) > 0
    assert torch.count_nonzero(grads["v_head.summary.bias"]) > 0

    vh.attach_head()
    assert not vh.head_detached
    grads = _value_loss_grads(vh, batch)
    with_grad = [n for n in body if grads[n] is not None and torch.count_nonzero(grads[n]) > 0]
    assert "decoder.final_layer_norm.weight" in with_grad
    assert "shared.weight" in with_grad
    assert torch.count_nonzero(grads["v_head.summary.weight"]) > 0


def test_detached_head_still_lets_the_lm_loss_train_the_body(variant):
    vh = variant.vh()
    vh.detach_head()
    out = vh(**variant.batch())
    (out.loss + out.value.sum()).backward()
    assert torch.count_nonzero(vh.decoder.final_layer_norm.weight.grad) > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    """PPO on long rollouts wants activation checkpointing; the hook on the stack must still see its output."""
    vh = VARIANTS[0].vh(value_head_init_scale=1.0).train()
    batch = VARIANTS[0].batch()

    def grads() -> dict[str, torch.Tensor]:
        vh.zero_grad(set_to_none=True)
        out = vh(**batch)
        (out.loss + out.value.pow(2).mean()).backward()
        return {n: p.grad.clone() for n, p in vh.named_parameters() if p.grad is not None}

    plain = grads()
    enable_checkpointing(vh)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and "v_head.summary.weight" in plain
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


# ---------------------------------------------------------------------------------------------------------
# Loading and saving
# ---------------------------------------------------------------------------------------------------------


def test_from_plain_lm_checkpoint_keeps_body_and_reports_new_head(variant, tmp_path, caplog):
    lm = variant.lm()
    lm.save_pretrained(tmp_path / "lm")
    with caplog.at_level(logging.INFO, logger="t5lab"):
        vh = variant.vh_model.from_pretrained(tmp_path / "lm")
    assert type(vh) is variant.vh_model
    assert vh.config.model_type == variant.vh_config.model_type
    checkpoint = load_file(tmp_path / "lm" / "model.safetensors")  # what is on disk, not the model in memory
    state = vh.state_dict()
    for name, tensor in checkpoint.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0, msg=name)
    # every body tensor is either in the file or tied to one that is (lm_head / embed_tokens -> shared)
    assert set(state) - set(checkpoint) - {"v_head.summary.weight", "v_head.summary.bias"} <= set(
        vh.all_tied_weights_keys
    )
    assert vh.load_report.new == ["v_head.summary.bias", "v_head.summary.weight"]
    assert vh.load_report.unused == []
    assert "2 new (randomly initialised)" in caplog.text and "v_head.summary" in caplog.text
    # the head got the small value-head init, not the generic one of a Linear (std = initializer_factor)
    assert vh.v_head.summary.weight.std().item() < 0.1
    assert torch.count_nonzero(vh.v_head.summary.bias) == 0
    # and the logits are the checkpoint's
    batch = variant.batch()
    with torch.no_grad():
        torch.testing.assert_close(vh(**batch).logits, lm(**batch).logits, rtol=0, atol=0)


def test_from_plain_lm_checkpoint_output_loading_info(tmp_path):
    VARIANTS[0].lm().save_pretrained(tmp_path)
    model, info = T5HeadWithValueModel.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["v_head.summary.bias", "v_head.summary.weight"]


def test_save_load_round_trip_through_auto_class(variant, tmp_path):
    vh = variant.vh()
    with torch.no_grad():  # a head that is clearly not a fresh init
        vh.v_head.summary.weight.normal_()
        vh.v_head.summary.bias.fill_(0.25)
    vh.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(Path(tmp_path).glob("*.bin"))
    loaded = variant.auto.from_pretrained(tmp_path)
    assert type(loaded) is variant.vh_model
    assert loaded.load_report.new == []
    for name, tensor in vh.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    batch = variant.batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**batch).value, vh(**batch).value)


# ---------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------


def test_generate_cached_equals_uncached(variant):
    vh = variant.vh()
    batch = variant.batch(with_labels=False)
    kwargs = dict(
        max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True,
        # a random tiny model repeats one token; these keep the greedy path varied and full length
        suppress_tokens=[0, 1], no_repeat_ngram_size=1,
    )
    if variant.seq2seq:
        kwargs["decoder_start_token_id"] = 0
    cached = vh.generate(**batch, use_cache=True, **kwargs)
    uncached = vh.generate(**batch, use_cache=False, **kwargs)
    torch.testing.assert_close(cached.sequences, uncached.sequences, rtol=0, atol=0)
    for a, b in zip(cached.scores, uncached.scores, strict=True):
        torch.testing.assert_close(a, b)
    new = cached.sequences[:, -6:]
    assert new.unique().numel() > 1  # a real decode, not a run of one token
    # generate is the LM's generate: the plain LM with the same body decodes the same tokens
    lm = variant.lm()
    copy_body(vh, lm)
    plain = lm.generate(**batch, use_cache=True, **kwargs)
    torch.testing.assert_close(vh.generate(**batch, use_cache=True, **kwargs).sequences, plain.sequences)


@pytest.mark.parametrize("cache_name", ["cache", "past_key_values"])
def test_values_with_kv_cache_equal_full_forward(variant, cache_name):
    """Token-by-token values equal a full forward's, with the cache passed under either name
    (transformers 5.24 renamed it) and no deprecation warning."""
    vh = variant.vh(value_head_init_scale=1.0)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad(), no_deprecation_warnings():
        if variant.seq2seq:
            input_ids = torch.randint(2, 64, (2, 6), generator=g)
            decoder_ids = torch.randint(2, 64, (2, 5), generator=g)
            full = vh(input_ids=input_ids, decoder_input_ids=decoder_ids).value  # (B, 5)
            enc = vh.get_encoder()(input_ids=input_ids)
            past, steps = None, []
            for t in range(decoder_ids.shape[1]):
                cache = {} if past is None else {cache_name: past}
                out = vh(encoder_outputs=enc, decoder_input_ids=decoder_ids[:, t : t + 1], use_cache=True, **cache)
                past = output_cache(out)
                steps.append(out.value)  # (B, 1)
        else:
            ids = torch.randint(2, 64, (2, 7), generator=g)
            full = vh(input_ids=ids, use_cache=False).value  # (B, 7)
            out = vh(input_ids=ids[:, :3], use_cache=True)  # prompt in one go, then token by token
            past, steps = output_cache(out), [out.value]
            for t in range(3, ids.shape[1]):
                out = vh(input_ids=ids[:, t : t + 1], use_cache=True, **{cache_name: past})
                past = output_cache(out)
                steps.append(out.value)
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_cache_under_both_names_is_refused(variant):
    vh = variant.vh()
    with pytest.raises(ValueError, match="not both"):
        vh(**variant.batch(), cache=None, past_key_values=None)


# ---------------------------------------------------------------------------------------------------------
# Tracing: no per-call hooks, output flattens as a pytree
# ---------------------------------------------------------------------------------------------------------


def test_forward_registers_no_hooks(variant):
    """No hook is added (or left) per call; transformers installs its output-capturing hooks once."""
    vh = variant.vh()
    with torch.no_grad():
        vh(**variant.batch())
        before = {name: len(m._forward_hooks) for name, m in vh.named_modules()}
        vh(**variant.batch())
    assert {name: len(m._forward_hooks) for name, m in vh.named_modules()} == before


def test_output_flattens_as_a_pytree(variant):
    """``value`` does not hide ``ModelOutput.values()``, which pytree flattening calls."""
    vh = variant.vh()
    with torch.no_grad():
        out = vh(**variant.batch())
    leaves, spec = torch.utils._pytree.tree_flatten(out)
    assert any(leaf is out.value for leaf in leaves)
    again = torch.utils._pytree.tree_unflatten(leaves, spec)
    torch.testing.assert_close(again.value, out.value)
    assert list(out.values())[-1] is out.value  # the dict method works again


def test_hidden_states_only_when_asked(variant):
    vh = variant.vh()
    batch = variant.batch()
    with torch.no_grad():
        quiet = vh(**batch)
        loud = vh(**batch, output_hidden_states=True)
    field = "decoder_hidden_states" if variant.seq2seq else "hidden_states"
    assert getattr(quiet, field) is None
    assert len(loud[field]) == 3  # embeddings + 2 layers
    torch.testing.assert_close(loud.value, quiet.value)


# ---------------------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------------------


def test_bf16_body_returns_float32_values(variant):
    vh = variant.vh(value_head_init_scale=1.0)
    batch = variant.batch()
    with torch.no_grad():
        ref = vh(**batch).value
        vh.to(torch.bfloat16)
        out = vh(**batch)
    assert out.logits.dtype == torch.bfloat16
    assert out.value.dtype == torch.float32
    torch.testing.assert_close(out.value, ref, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_from_config_in_half_precision_keeps_the_head_in_float32(variant, dtype):
    config = variant.vh_config(**variant.config_kwargs)
    model = variant.vh_model._from_config(config, dtype=dtype)
    assert model.shared.weight.dtype == dtype
    assert model.v_head.summary.weight.dtype == torch.float32
    assert model.v_head.summary.bias.dtype == torch.float32


def test_bf16_load_keeps_the_head_in_float32(variant, tmp_path):
    variant.vh().save_pretrained(tmp_path)
    loaded = variant.auto.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.shared.weight.dtype == torch.bfloat16
    assert loaded.v_head.summary.weight.dtype == torch.float32
    with torch.no_grad():
        assert loaded(**variant.batch()).value.dtype == torch.float32
