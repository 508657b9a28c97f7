"""T5DecoderOnlyForCausalLM against references: HF's T5 decoder stack, perturbation tests for the
masks, cached == uncached decoding, a hand-computed loss, a T5 checkpoint's tensors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, T5Config
from transformers.models.t5.modeling_t5 import T5Stack

import t5lab  # noqa: F401  (registers the variants with the Auto classes)
from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM
from t5lab.models.t5core import CACHE_FIELD
from tests.conftest import TINY_T5
from tests.models.helpers import enable_checkpointing

TINY = {k: v for k, v in TINY_T5.items() if k not in ("num_decoder_layers", "decoder_start_token_id")}


def make_model(seed: int = 0, attn: str | None = None, **overrides) -> T5DecoderOnlyForCausalLM:
    torch.manual_seed(seed)
    config = T5DecoderOnlyConfig(**{**TINY, **overrides})
    if attn is not None:
        config._attn_implementation = attn
    return T5DecoderOnlyForCausalLM(config).eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, TINY["vocab_size"], (batch, length), generator=generator)


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


def test_config_from_t5_dict_keeps_its_model_type():
    config = T5DecoderOnlyConfig.from_dict(T5Config(**TINY_T5).to_dict())
    assert config.model_type == "t5_decoder_only"
    assert config.to_dict()["model_type"] == "t5_decoder_only"
    assert config.is_encoder_decoder is False
    assert config.prefix_forward_buckets == TINY["relative_attention_num_buckets"]
    assert isinstance(AutoConfig.for_model("t5_decoder_only"), T5DecoderOnlyConfig)


def test_config_from_t5_config_takes_the_decoder_depth():
    t5 = T5Config(**{**TINY_T5, "num_layers": 3, "num_decoder_layers": 2}, tie_word_embeddings=False)
    config = T5DecoderOnlyConfig.from_t5_config(t5, prefix_lm=True)
    assert (config.num_layers, config.prefix_lm) == (2, True)
    assert config.scale_decoder_outputs is False  # T5 v1.1-style "no output scaling" is kept


@pytest.mark.parametrize("buckets", [-1, 1])
def test_config_rejects_bad_forward_buckets(buckets):
    with pytest.raises(ValueError, match="prefix_forward_buckets"):
        T5DecoderOnlyConfig(**TINY, prefix_forward_buckets=buckets)


# --------------------------------------------------------------------------------------------
# causal LM == HF decoder stack
# --------------------------------------------------------------------------------------------


def hf_decoder_logits(model: T5DecoderOnlyForCausalLM, input_ids, attention_mask=None) -> torch.Tensor:
    """Reference: transformers' T5Stack as a decoder (no encoder states) + scaled tied head."""
    config = T5Config(**TINY_T5)
    config.is_decoder = True
    config.is_encoder_decoder = False
    config.num_layers = model.config.num_layers
    stack = T5Stack(config).eval()
    result = stack.load_state_dict(
        {k.removeprefix("decoder."): v for k, v in model.state_dict().items() if k.startswith("decoder.")},
        strict=False,
    )
    # only the cross-attention (absent from ours) is left out, only our forward table is extra
    assert all("EncDecAttention" in k or "layer.1." in k for k in result.missing_keys)
    extra = (
        ["block.0.layer.0.SelfAttention.prefix_forward_bias.weight"]
        if model.config.prefix_forward_buckets
        else []
    )
    assert result.unexpected_keys == extra
    hidden = stack(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return (hidden * config.d_model**-0.5) @ model.shared.weight.T


@pytest.mark.parametrize("forward_buckets", [None, 0])
def test_causal_logits_equal_hf_decoder_stack(forward_buckets):
    model = make_model(prefix_forward_buckets=forward_buckets)
    input_ids = tokens(2, 9)
    with torch.no_grad():
        ours = model(input_ids).logits
        reference = hf_decoder_logits(model, input_ids)
    torch.testing.assert_close(ours, reference)


def test_causal_logits_equal_hf_decoder_stack_with_left_padding():
    model = make_model()
    input_ids = tokens(2, 8)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0
    with torch.no_grad():
        ours = model(input_ids, attention_mask=attention_mask).logits
        reference = hf_decoder_logits(model, input_ids, attention_mask)
    torch.testing.assert_close(ours[0, 3:], reference[0, 3:])
    torch.testing.assert_close(ours[1], reference[1])


def test_all_zero_prefix_is_the_causal_model():
    model = make_model()
    input_ids = tokens(2, 7)
    with torch.no_grad():
        causal = model(input_ids).logits
        zero_prefix = model(input_ids, prefix_mask=torch.zeros_like(input_ids)).logits
    torch.testing.assert_close(zero_prefix, causal)


# --------------------------------------------------------------------------------------------
# masks seen through the model: perturb tokens, watch which logits move
# --------------------------------------------------------------------------------------------


def _changed_positions(model, input_ids, position, prefix_mask=None) -> torch.Tensor:
    changed = input_ids.clone()
    changed[:, position] = (changed[:, position] + 7) % (TINY["vocab_size"] - 2) + 2
    with torch.no_grad():
        before = model(input_ids, prefix_mask=prefix_mask).logits
        after = model(changed, prefix_mask=prefix_mask).logits
    return (before - after).abs().amax(dim=(0, 2)) > 1e-6  # (T,)


def test_causal_future_tokens_never_change_earlier_logits():
    model = make_model()
    input_ids = tokens(2, 10)
    for position in (3, 9):
        moved = _changed_positions(model, input_ids, position)
        assert not moved[:position].any()
        assert moved[position:].all()


def test_prefix_positions_see_later_prefix_tokens_but_targets_stay_causal():
    model = make_model()
    input_ids = tokens(2, 10)
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[:, :5] = 1  # positions 0..4 are the input, 5..9 the target
    # a later prefix token reaches every earlier prefix position (bidirectional prefix)
    moved = _changed_positions(model, input_ids, 4, prefix_mask)
    assert moved.all()
    # a target token never reaches an earlier position, prefix or not
    moved = _changed_positions(model, input_ids, 7, prefix_mask)
    assert not moved[:7].any()
    assert moved[7:].all()
    # and without the prefix the same model is causal in the prefix too
    assert not _changed_positions(model, input_ids, 4)[:4].any()


def test_forward_distances_are_told_apart_in_the_prefix():
    model = make_model()
    attention = model.decoder.block[0].layer[0].SelfAttention
    with torch.no_grad():
        bias = attention.compute_bias(8, 8)[0]  # (H, Q, K)
        plus_one, plus_five = bias[:, 0, 1], bias[:, 0, 5]
        assert not torch.allclose(plus_one, plus_five)
        torch.testing.assert_close(plus_one, attention.prefix_forward_bias.weight[0])
        # backward distances are T5's decoder buckets, untouched
        torch.testing.assert_close(bias[:, 3, 0], attention.relative_attention_bias.weight[3])

    t5x = make_model(prefix_forward_buckets=0)
    attention = t5x.decoder.block[0].layer[0].SelfAttention
    assert attention.prefix_forward_bias is None
    with torch.no_grad():
        bias = attention.compute_bias(8, 8)[0]
        bucket_zero = attention.relative_attention_bias.weight[0]
        for distance in (1, 5):
            torch.testing.assert_close(bias[:, 0, distance], bucket_zero)


def test_forward_table_only_reaches_prefix_queries():
    model = make_model()
    attention = model.decoder.block[0].layer[0].SelfAttention
    input_ids = tokens(1, 8)
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[:, :4] = 1
    with torch.no_grad():
        bias_before = attention.compute_bias(8, 8)
        causal_before = model(input_ids).logits
        prefix_before = model(input_ids, prefix_mask=prefix_mask).logits
        attention.prefix_forward_bias.weight.add_(1.0)
        bias_after = attention.compute_bias(8, 8)
        causal_after = model(input_ids).logits
        prefix_after = model(input_ids, prefix_mask=prefix_mask).logits
    ahead = torch.ones(8, 8, dtype=torch.bool).triu(1)  # key after query
    assert torch.equal(bias_before[..., ~ahead], bias_after[..., ~ahead])
    assert not torch.isclose(bias_before[..., ahead], bias_after[..., ahead]).any()
    torch.testing.assert_close(causal_before, causal_after)  # a causal LM never reads the table
    moved = (prefix_before - prefix_after).abs().amax(dim=(0, 2)) > 1e-6
    assert moved[:3].all()  # prefix queries with prefix keys ahead of them read it


def test_eager_equals_sdpa_with_prefix_and_padding():
    input_ids = tokens(2, 9)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[0, 2:5] = 1
    prefix_mask[1, :6] = 1
    with torch.no_grad():
        eager = make_model(attn="eager")(input_ids, attention_mask=attention_mask, prefix_mask=prefix_mask)
        sdpa = make_model(attn="sdpa")(input_ids, attention_mask=attention_mask, prefix_mask=prefix_mask)
    real = attention_mask.bool()
    torch.testing.assert_close(eager.logits[real], sdpa.logits[real])


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_equals_eager_with_prefix_padding_and_batch():
    input_ids = tokens(2, 9)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[0, 2:5] = 1
    prefix_mask[1, :6] = 1
    with torch.no_grad():
        eager = make_model(attn="eager")(input_ids, attention_mask=attention_mask, prefix_mask=prefix_mask)
        flex = make_model(attn="flex_attention")(
            input_ids, attention_mask=attention_mask, prefix_mask=prefix_mask
        )
    real = attention_mask.bool()
    torch.testing.assert_close(eager.logits[real], flex.logits[real])


def test_set_attn_implementation_reaches_the_stack():
    model = make_model()
    model.set_attn_implementation("eager")
    assert model.decoder.config._attn_implementation == "eager"
    out = model(tokens(1, 5), prefix_mask=torch.tensor([[1, 1, 0, 0, 0]]), output_attentions=True)
    attentions = out.attentions[0][0]  # (H, Q, K) of layer 0
    assert attentions[:, 0, 1].gt(0).all()  # prefix position 0 attends to prefix position 1
    assert attentions[:, 2, 3:].eq(0).all()  # target position 2 does not look ahead


# --------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------


def test_loss_is_token_weighted_and_ignores_minus_100():
    model = make_model()
    input_ids = tokens(2, 8)
    labels = input_ids.clone()
    labels[0, :5] = -100  # prompt of row 0 carries no loss
    labels[1, 6:] = -100  # padding of row 1
    out = model(input_ids, labels=labels)
    # hand-computed: logits[:, t] predict labels[:, t + 1]; mean over the kept tokens of the batch
    total, count = 0.0, 0
    for b in range(2):
        for t in range(7):
            target = labels[b, t + 1].item()
            if target == -100:
                continue
            total += -F.log_softmax(out.logits[b, t], dim=-1)[target].item()
            count += 1
    assert count == 3 + 5
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)


# --------------------------------------------------------------------------------------------
# cache and generation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix_length", [0, 4])
def test_cached_logits_equal_full_recompute(prefix_length):
    model = make_model()
    input_ids = tokens(2, 10)
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[:, :prefix_length] = 1
    with torch.no_grad():
        full = model(input_ids, prefix_mask=prefix_mask).logits
        start = max(prefix_length, 1)
        out = model(input_ids[:, :start], prefix_mask=prefix_mask[:, :start], use_cache=True)
        steps = [out.logits]
        cache = getattr(out, CACHE_FIELD)  # the old name warns on 5.24+
        for t in range(start, 10):
            out = model(
                input_ids[:, t : t + 1],
                prefix_mask=prefix_mask[:, : t + 1],
                past_key_values=cache,
                use_cache=True,
            )
            cache = getattr(out, CACHE_FIELD)  # the old name warns on 5.24+
            steps.append(out.logits)
    # one query at a time vs. all at once: different sdpa kernels, float-rounding differences only
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("use_prefix", [False, True])
def test_cached_and_uncached_greedy_decoding_agree(use_prefix):
    model = make_model()
    input_ids = tokens(2, 6)
    kwargs = {"prefix_mask": torch.ones_like(input_ids)} if use_prefix else {}
    common = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    cached = model.generate(input_ids, use_cache=True, **common, **kwargs)
    uncached = model.generate(input_ids, use_cache=False, **common, **kwargs)
    assert cached.shape == (2, 14)
    assert torch.equal(cached, uncached)


def test_beam_search_with_prefix_cached_equals_uncached():
    model = make_model()
    input_ids = tokens(2, 5)
    common = dict(
        prefix_mask=torch.ones_like(input_ids),
        num_beams=3,
        max_new_tokens=5,
        do_sample=False,
        eos_token_id=None,
    )
    assert torch.equal(
        model.generate(input_ids, **common), model.generate(input_ids, use_cache=False, **common)
    )


def test_gradient_checkpointing_gives_the_same_gradients():
    model = make_model().train()
    input_ids = tokens(2, 8)
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[:, :4] = 1
    labels = input_ids.masked_fill(prefix_mask.bool(), -100)

    def grads():
        model.zero_grad()
        model(input_ids, prefix_mask=prefix_mask, labels=labels, use_cache=False).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    enable_checkpointing(model)
    for a, b in zip(plain, grads()):
        torch.testing.assert_close(a, b)


def test_generate_with_prefix_matches_manual_greedy_loop():
    """generate(prefix_mask=prompt) == argmax loop on the full sequence with the prompt as prefix."""
    model = make_model()
    input_ids = tokens(1, 6)
    generated = model.generate(
        input_ids,
        prefix_mask=torch.ones_like(input_ids),
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=None,
    )
    sequence = input_ids
    with torch.no_grad():
        for _ in range(6):
            prefix = torch.zeros_like(sequence)
            prefix[:, :6] = 1
            next_token = model(sequence, prefix_mask=prefix).logits[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, next_token], dim=1)
    assert torch.equal(generated, sequence)


def test_prefix_lm_config_uses_the_prompt_as_prefix_in_generate():
    model = make_model(prefix_lm=True)
    input_ids = tokens(2, 6)
    out = model.generate(
        input_ids, max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    with torch.no_grad():
        as_prefix = model(input_ids, prefix_mask=torch.ones_like(input_ids)).logits[:, -1]
        causal = model(input_ids).logits[:, -1]
    torch.testing.assert_close(out.logits[0], as_prefix)
    assert not torch.allclose(out.logits[0], causal)


def test_left_padded_batch_generation_equals_one_by_one():
    model = make_model(prefix_lm=True)
    short, long = tokens(1, 3, seed=2), tokens(1, 6, seed=3)
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], dim=1), long])
    attention_mask = (torch.arange(6)[None] >= torch.tensor([[3], [0]])).long()
    common = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    batched = model.generate(batch, attention_mask=attention_mask, **common)
    alone_short = model.generate(short, **common)
    alone_long = model.generate(long, **common)
    assert torch.equal(batched[0, 3:], alone_short[0])
    assert torch.equal(batched[1], alone_long[0])


# --------------------------------------------------------------------------------------------
# from_t5, save/load, pipeline
# --------------------------------------------------------------------------------------------


def _check_from_t5(model, tiny_t5):
    t5_state = tiny_t5.state_dict()
    ours = model.state_dict()
    for name, tensor in ours.items():
        if "prefix_forward_bias" in name:
            continue
        torch.testing.assert_close(tensor, t5_state[name], msg=name)
    report = model.load_report
    assert report.new == ["decoder.block.0.layer.0.SelfAttention.prefix_forward_bias.weight"]
    assert "decoder.block.0.layer.1.EncDecAttention.q.weight" in report.unused
    assert "decoder.block.1.layer.1.layer_norm.weight" in report.unused
    assert any(name.startswith("encoder.block.") for name in report.unused)
    assert (
        "shared.weight" in report.used and "decoder.block.1.layer.2.DenseReluDense.wo.weight" in report.used
    )
    # the logits are the T5 decoder's own, run without encoder states (no cross-attention)
    input_ids = tokens(2, 7)
    with torch.no_grad():
        hidden = tiny_t5.decoder(input_ids=input_ids).last_hidden_state
        reference = tiny_t5.lm_head(hidden * tiny_t5.config.d_model**-0.5)
        torch.testing.assert_close(model(input_ids).logits, reference)


def test_from_t5_checkpoint_directory(t5_checkpoint, tiny_t5, caplog):
    with caplog.at_level("INFO", logger="t5lab"):
        model = T5DecoderOnlyForCausalLM.from_t5(t5_checkpoint, prefix_lm=True)
    assert model.config.prefix_lm and model.config.num_layers == TINY_T5["num_decoder_layers"]
    _check_from_t5(model, tiny_t5)
    assert "1 new" in caplog.text


def test_from_t5_forward_table_starts_as_t5x(tiny_t5):
    """Converted, the prefix LM equals t5x's (all forward distances in the decoder's bucket 0)."""
    ours = T5DecoderOnlyForCausalLM.from_t5(tiny_t5)
    t5x = T5DecoderOnlyForCausalLM.from_t5(tiny_t5, prefix_forward_buckets=0)
    input_ids = tokens(2, 8)
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[:, :5] = 1
    with torch.no_grad():
        torch.testing.assert_close(
            ours(input_ids, prefix_mask=prefix_mask).logits, t5x(input_ids, prefix_mask=prefix_mask).logits
        )


def test_from_t5_model_in_memory(tiny_t5):
    model = T5DecoderOnlyForCausalLM.from_t5(tiny_t5)
    _check_from_t5(model, tiny_t5)
    assert model.lm_head.weight is model.shared.weight


def test_from_t5_rejects_a_non_t5_source(tmp_path):
    make_model().save_pretrained(tmp_path / "decoder_only")
    with pytest.raises(ValueError, match="T5 encoder-decoder"):
        T5DecoderOnlyForCausalLM.from_t5(str(tmp_path / "decoder_only"))
    with pytest.raises(ValueError, match="not a directory"):
        T5DecoderOnlyForCausalLM.from_t5(str(tmp_path / "missing"))


def test_save_and_load_through_auto_model_for_causal_lm(tmp_path):
    model = make_model(prefix_lm=True, prefix_forward_buckets=4)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    # load with the eager back-end: the round trip and eager == sdpa (model is sdpa) in one go
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert type(loaded) is T5DecoderOnlyForCausalLM
    assert loaded.decoder.config._attn_implementation == "eager"
    assert (loaded.config.prefix_lm, loaded.config.prefix_forward_buckets) == (True, 4)
    input_ids = tokens(2, 7)
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[:, :3] = 1
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids, prefix_mask=prefix_mask).logits,
            model(input_ids, prefix_mask=prefix_mask).logits,
        )
    assert loaded.lm_head.weight is loaded.shared.weight


@pytest.mark.slow
def test_text_generation_pipeline_with_byt5_tokenizer():
    from transformers import ByT5Tokenizer, pipeline

    tokenizer = ByT5Tokenizer()
    model = make_model(vocab_size=len(tokenizer), prefix_lm=True)
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    gen = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False)  # min: no early eos
    out = generator("abc", **gen)
    assert out[0]["generated_text"].startswith("abc")
    # the pipeline's tokens are generate()'s on the tokenized prompt (ByT5 appends </s>)
    ids = generator("abc", return_tensors=True, **gen)[0]["generated_token_ids"]
    expected = model.generate(**tokenizer("abc", return_tensors="pt"), **gen)
    assert list(ids) == expected[0].tolist()
    assert len(ids) == 4 + 5


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    model = make_model()
    input_ids = tokens(2, 6)
    with pytest.raises(ValueError, match=r"prefix_mask has shape \(2, 5\) but must be"):
        model(input_ids, prefix_mask=torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="prefix must come first"):
        model(input_ids, prefix_mask=torch.tensor([[1, 0, 1, 0, 0, 0]] * 2))
    with pytest.raises(ValueError, match="0/1"):
        model(input_ids, prefix_mask=torch.full((2, 6), 0.5))
    with pytest.raises(ValueError, match="0/1"):
        model(input_ids, prefix_mask=torch.full((2, 6), 2))
    with pytest.raises(ValueError, match="labels has shape"):
        model(input_ids, labels=input_ids[:, 1:])
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(input_ids, attention_mask=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()


def test_deepcopy_and_training_step_reach_the_forward_table():
    model = copy.deepcopy(make_model()).train()
    input_ids = tokens(2, 8)
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[:, :4] = 1
    labels = input_ids.masked_fill(prefix_mask.bool(), -100)
    model(input_ids, prefix_mask=prefix_mask, labels=labels).loss.backward()
    grad = model.decoder.block[0].layer[0].SelfAttention.prefix_forward_bias.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_init_matches_transformers_t5():
    """Fresh weights follow T5's scaled init (transformers 5 skips it for 'custom code' classes)."""
    from transformers import T5Config, T5ForConditionalGeneration

    from t5lab.models.value_head import T5DecoderOnlyWithValueHead

    kw = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0)
    torch.manual_seed(0)
    ref = T5ForConditionalGeneration(T5Config(**kw)).decoder.block[0].layer[0].SelfAttention
    for cls in (T5DecoderOnlyForCausalLM, T5DecoderOnlyWithValueHead):
        torch.manual_seed(0)
        ours = cls(T5DecoderOnlyConfig(**kw)).decoder.block[0].layer[0].SelfAttention
        for name in ("q", "k", "v", "o"):
            expected = getattr(ref, name).weight.std().item()
            got = getattr(ours, name).weight.std().item()
            assert abs(got - expected) < 0.3 * expected, (cls.__name__, name, got, expected)


# --------------------------------------------------------------------------------------------
# logits_to_keep with labels: the LM head only where the loss is taken
# --------------------------------------------------------------------------------------------


def _prefix_lm_batch(batch: int = 2, src: int = 5, tgt: int = 4):
    input_ids = tokens(batch, src + tgt)
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[:, :src] = 1
    labels = input_ids.masked_fill(prefix_mask.bool(), -100)  # targets only, as formulation.py builds them
    labels[1, -1] = -100  # a padded target position
    return input_ids, prefix_mask, labels


def _loss_and_grads(model, logits_to_keep, **batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch, logits_to_keep=logits_to_keep)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "keep",
    [
        5,  # tgt_len + 1: the last prefix position predicts the first target
        7,  # more than needed
        torch.arange(4, 9),  # the same positions as a 1D tensor
        torch.tensor([-5, -4, -3, -2, -1]),  # negative positions, as hidden[:, index] reads them
        torch.arange(3, 8).expand(2, -1),  # 2D per-row positions (the last position predicts nothing)
        torch.arange(9).expand(2, -1) >= 4,  # 2D bool mask: logits flattened to (N, V)
    ],
)
def test_logits_to_keep_with_labels_equals_the_full_loss_and_gradients(keep):
    """Reference: the same model with every logit computed; dropped positions only predict -100."""
    model = make_model(seed=3).train()
    input_ids, prefix_mask, labels = _prefix_lm_batch()
    batch = dict(input_ids=input_ids, prefix_mask=prefix_mask, labels=labels)
    full, full_grads = _loss_and_grads(model, 0, **batch)
    kept, kept_grads = _loss_and_grads(model, keep, **batch)
    torch.testing.assert_close(kept.loss, full.loss, rtol=1e-6, atol=1e-6)
    assert full_grads.keys() == kept_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(kept_grads[name], full_grads[name], rtol=1e-5, atol=1e-6, msg=name)
    # the kept logits are the full logits at those positions
    if isinstance(keep, int):
        torch.testing.assert_close(kept.logits, full.logits[:, -keep:])
    elif keep.dtype == torch.bool:
        torch.testing.assert_close(kept.logits, full.logits[keep])
    elif keep.dim() == 1:
        torch.testing.assert_close(kept.logits, full.logits[:, keep])
    else:
        torch.testing.assert_close(kept.logits, torch.take_along_dim(full.logits, keep[..., None], dim=1))


def test_logits_to_keep_gives_the_last_n_logits_for_the_bench_shape():
    """The interface the training step uses: ``model(..., labels=labels, logits_to_keep=n)``."""
    model = make_model(seed=3)
    input_ids, prefix_mask, labels = _prefix_lm_batch(src=5, tgt=4)
    out = model(input_ids, prefix_mask=prefix_mask, labels=labels, logits_to_keep=4 + 1)
    assert out.logits.shape == (2, 5, TINY["vocab_size"])
    assert out.loss.ndim == 0


def test_logits_to_keep_refuses_a_label_on_a_dropped_position():
    model = make_model()
    input_ids, prefix_mask, labels = _prefix_lm_batch(src=5, tgt=4)
    # keeping 4 drops position 4, the last prefix token, which predicts the first target labels[:, 5]
    with pytest.raises(ValueError, match=r"labels\[0, 5\] = \d+ is predicted by position 4, which logits_to_keep drops"):
        model(input_ids, prefix_mask=prefix_mask, labels=labels, logits_to_keep=4)
    with pytest.raises(ValueError, match="which logits_to_keep drops"):
        model(input_ids, prefix_mask=prefix_mask, labels=labels, logits_to_keep=torch.tensor([5, 6, 7]))
    with pytest.raises(ValueError, match="logits_to_keep must be >= 0"):
        model(input_ids, labels=labels, logits_to_keep=-1)


# --------------------------------------------------------------------------------------------
# packed rows (segment_ids, t5lab.train.packing)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("prefix_lengths", [None, (3, 2)])
def test_segments_equal_each_sequence_alone(attn, prefix_lengths):
    """A row holding two sequences (and padding) gives each the logits it gets alone."""
    model = make_model(attn=attn)
    a, b = tokens(1, 6, seed=3), tokens(1, 4, seed=4)
    row = torch.cat([a, b, torch.zeros(1, 2, dtype=torch.long)], dim=1)  # (1, 12)
    segments = torch.tensor([[1] * 6 + [2] * 4 + [0] * 2])
    prefix = alone_a = alone_b = None
    if prefix_lengths is not None:
        pa, pb = prefix_lengths
        prefix = torch.tensor([[1] * pa + [0] * (6 - pa) + [1] * pb + [0] * (4 - pb) + [0, 0]])
        alone_a, alone_b = prefix[:, :6], prefix[:, 6:10]
    with torch.no_grad():
        packed = model(row, segment_ids=segments, prefix_mask=prefix, use_cache=False).logits
        want_a = model(a, prefix_mask=alone_a, use_cache=False).logits
        want_b = model(b, prefix_mask=alone_b, use_cache=False).logits
    torch.testing.assert_close(packed[:, :6], want_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed[:, 6:10], want_b, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(packed).all()


def test_one_segment_per_row_is_the_unpacked_model():
    model = make_model()
    ids = tokens(2, 7)
    prefix = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        got = model(ids, segment_ids=torch.ones_like(ids), prefix_mask=prefix, use_cache=False).logits
        want = model(ids, prefix_mask=prefix, use_cache=False).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_segment_ids_bad_inputs():
    model = make_model()
    ids = tokens(1, 6)
    seg = torch.tensor([[1, 1, 1, 2, 2, 2]])
    with pytest.raises(ValueError, match="after a target token of the same segment"):
        model(ids, segment_ids=seg, prefix_mask=torch.tensor([[1, 0, 1, 1, 0, 0]]), use_cache=False)
    with pytest.raises(ValueError, match="segment_ids has shape"):
        model(ids, segment_ids=seg[:, :4], use_cache=False)
    with pytest.raises(ValueError, match="replace attention_mask"):
        model(ids, segment_ids=seg, attention_mask=torch.ones_like(ids), use_cache=False)


# --------------------------------------------------------------------------------------------
# what transformers' common tests pass (defects found by ModelTesterMixin / GenerationTesterMixin)
# --------------------------------------------------------------------------------------------


def test_shift_labels_equal_labels():
    model = make_model()
    input_ids = tokens(2, 8)
    labels = input_ids.clone()
    labels[0, :3] = -100
    shifted = F.pad(labels[:, 1:], (0, 1), value=-100)
    with torch.no_grad():
        from_labels = model(input_ids, labels=labels).loss
        from_shifted = model(input_ids, shift_labels=shifted).loss
    torch.testing.assert_close(from_shifted, from_labels)


def test_return_dict_false_gives_a_tuple():
    model = make_model()
    input_ids = tokens(2, 6)
    with torch.no_grad():
        out = model(input_ids, labels=input_ids)
        as_tuple = model(input_ids, labels=input_ids, return_dict=False, use_cache=True)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.loss)
    torch.testing.assert_close(as_tuple[1], out.logits)
    assert as_tuple[2].get_seq_length() == 6  # the cache


def test_cache_comes_back_under_the_installed_versions_name():
    model = make_model()
    with torch.no_grad():
        out = model(tokens(1, 4), use_cache=True)
        step = model(tokens(1, 1), **{CACHE_FIELD: getattr(out, CACHE_FIELD)}, use_cache=True)
    assert getattr(step, CACHE_FIELD).get_seq_length() == 5


def test_prefix_with_a_prepared_4d_mask_equals_the_2d_mask():
    model = make_model()
    input_ids = tokens(2, 7)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0
    prefix_mask = torch.zeros_like(input_ids)
    prefix_mask[0, 2:4] = 1
    prefix_mask[1, :3] = 1
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    four_d = (causal[None] & attention_mask.bool()[:, None, :])[:, None]  # (B, 1, T, T), as generate builds it
    additive = torch.where(four_d, 0.0, torch.finfo(torch.float32).min)
    with torch.no_grad():
        want = model(input_ids, attention_mask=attention_mask, prefix_mask=prefix_mask).logits
        got_bool = model(input_ids, attention_mask=four_d, prefix_mask=prefix_mask).logits
        got_float = model(input_ids, attention_mask=additive, prefix_mask=prefix_mask).logits
    real = attention_mask.bool()
    torch.testing.assert_close(got_bool[real], want[real])
    torch.testing.assert_close(got_float[real], want[real])


@pytest.mark.parametrize("padded", [False, True])
def test_prefix_generation_with_a_static_cache_equals_dynamic(padded):
    model = make_model(prefix_lm=True)
    input_ids = tokens(2, 6)
    attention_mask = torch.ones_like(input_ids)
    if padded:
        input_ids[0, :2] = 0
        attention_mask[0, :2] = 0
    common = dict(attention_mask=attention_mask, max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0)
    dynamic = model.generate(input_ids, **common)
    static = model.generate(input_ids, cache_implementation="static", **common)
    assert torch.equal(static, dynamic)


def test_prefix_assisted_decoding_equals_greedy():
    model = make_model(prefix_lm=True)
    assistant = make_model(seed=5, num_layers=1, prefix_lm=True)
    input_ids = tokens(1, 6)
    common = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    greedy = model.generate(input_ids, **common)
    assisted = model.generate(input_ids, assistant_model=assistant, **common)
    assert torch.equal(assisted, greedy)


def test_inputs_embeds_equal_input_ids_and_legacy_checkpointing_flag():
    model = make_model()
    input_ids = tokens(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs_embeds=model.shared(input_ids)).logits, model(input_ids).logits)
    legacy = T5DecoderOnlyForCausalLM(T5DecoderOnlyConfig(**TINY, gradient_checkpointing=True)).train()
    legacy(input_ids, labels=input_ids).loss.backward()
    enable_checkpointing(legacy)
    assert legacy.decoder.gradient_checkpointing
    legacy(input_ids, labels=input_ids).loss.backward()


def test_output_hidden_states_and_attentions_have_transformers_names_and_lengths():
    model = make_model()
    out = model(tokens(2, 5), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == TINY["num_layers"] + 1 and len(out.attentions) == TINY["num_layers"]
    assert out.attentions[0].shape == (2, TINY["num_heads"], 5, 5)


def test_fp16_load_keeps_wo_in_fp32_and_runs(tmp_path):
    make_model().save_pretrained(tmp_path)
    half = T5DecoderOnlyForCausalLM.from_pretrained(tmp_path, dtype=torch.float16)
    assert half.decoder.block[0].layer[2].DenseReluDense.wo.weight.dtype == torch.float32  # _keep_in_fp32_modules
    assert half.decoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float16
    input_ids = tokens(2, 6)
    with torch.no_grad():
        out = half(input_ids, prefix_mask=torch.ones_like(input_ids))
    assert out.logits.dtype == torch.float16 and torch.isfinite(out.logits).all()
    assert half.generate(input_ids, max_new_tokens=3, do_sample=False, eos_token_id=None).shape == (2, 9)
