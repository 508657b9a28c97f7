"""t5lab's T5 core against transformers' T5: copied weights, equal outputs and gradients (fp32, 1e-5),
cached decoding == full forward, eager == sdpa, buckets on hand-computed cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from t5lab.models import t5core
from t5lab.models.t5core import T5LayerNorm, T5Stack, clamp_fp16, relative_position_bucket
from tests.conftest import TINY_T5

TOL = dict(atol=1e-5, rtol=1e-5)


def assert_grads_close(ours: nn.Module, reference: nn.Module) -> None:
    """Every parameter's gradient equal within 1e-5 of that gradient's own scale (largest entry)."""
    ref_params = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        assert param.grad is not None, name
        expected = ref_params[name].grad
        scale = expected.abs().max().clamp(min=1e-6)
        torch.testing.assert_close(param.grad / scale, expected / scale, **TOL, msg=name)


class CoreSeq2Seq(nn.Module):
    """T5ForConditionalGeneration rebuilt from the core (test only): same parameter names."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        self.decoder = T5Stack(config, self.shared, is_decoder=True, num_layers=config.num_decoder_layers)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.shared.weight  # tied, as T5ForConditionalGeneration

    def forward(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask=None, cache=None,
                use_cache=False):
        encoded = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        out = self.decoder(input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
                           encoder_hidden_states=encoded, encoder_attention_mask=attention_mask,
                           cache=cache, use_cache=use_cache)
        return self.lm_head(out.last_hidden_state * self.config.d_model**-0.5), out


def pair(ff: str = "relu", attn: str = "sdpa", seed: int = 0):
    torch.manual_seed(seed)
    config = T5Config(**TINY_T5, feed_forward_proj=ff)
    config._attn_implementation = "eager"
    reference = T5ForConditionalGeneration(config).eval()
    ours_config = T5Config(**TINY_T5, feed_forward_proj=ff)
    ours_config._attn_implementation = attn
    ours = CoreSeq2Seq(ours_config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # names identical, nothing left over
    return reference, ours


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, TINY_T5["vocab_size"], (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # right padding
    mask[2, :2] = 0  # left padding
    dec = torch.randint(2, TINY_T5["vocab_size"], (3, 5), generator=g)
    dec_mask = torch.ones_like(dec)
    dec_mask[1, 4:] = 0
    return ids, mask, dec, dec_mask


def test_state_dict_names_are_transformers_t5():
    reference, ours = pair("gated-gelu")
    assert set(ours.state_dict()) == set(reference.state_dict())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("ff", ["relu", "gated-gelu", "gated-silu"])
def test_encoder_decoder_logits_and_gradients_equal_transformers(ff, attn):
    reference, ours = pair(ff, attn)
    ids, mask, dec, dec_mask = batch()
    ref = reference(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask,
                    output_hidden_states=True)
    logits, _ = ours(ids, mask, dec, dec_mask)
    real = dec_mask.bool()
    enc_real = mask.bool()
    torch.testing.assert_close(
        ours.encoder(input_ids=ids, attention_mask=mask).last_hidden_state[enc_real],
        ref.encoder_last_hidden_state[enc_real], **TOL,
    )
    torch.testing.assert_close(logits[real], ref.logits[real], **TOL)
    # gradients of a loss over the real positions reach every parameter identically
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2))
    (ref.logits[real] * weights[real]).sum().backward()
    (logits[real] * weights[real]).sum().backward()
    assert_grads_close(ours, reference)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_forward_equals_transformers():
    """Flex attention reads the folded bias in score_mod (forward only: no flex backward on CPU)."""
    reference, ours = pair("gated-gelu", "flex_attention")
    ids, mask, dec, dec_mask = batch()
    with torch.no_grad():
        ref = reference(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        logits, _ = ours(ids, mask, dec, dec_mask)
    real = dec_mask.bool()
    torch.testing.assert_close(logits[real], ref.logits[real], **TOL)


def test_decoder_stack_hidden_states_and_attentions_match_transformers():
    reference, ours = pair("gated-gelu", attn="sdpa")
    ids, mask, dec, dec_mask = batch()
    encoded = reference.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    kwargs = dict(input_ids=dec, attention_mask=dec_mask, encoder_hidden_states=encoded, encoder_attention_mask=mask,
                  output_attentions=True, output_hidden_states=True, use_cache=False)
    ref = reference.decoder(**kwargs)
    out = ours.decoder(**kwargs)  # output_attentions: the eager path for this call
    assert len(out.hidden_states) == len(ref.hidden_states) == TINY_T5["num_decoder_layers"] + 1
    real = dec_mask.bool()
    for mine, theirs in zip(out.hidden_states, ref.hidden_states, strict=True):
        torch.testing.assert_close(mine[real], theirs[real], **TOL)
    for field in ("attentions", "cross_attentions"):
        for mine, theirs in zip(getattr(out, field), getattr(ref, field), strict=True):
            # weights (B, H, Q, K): compare the rows of real queries
            torch.testing.assert_close(mine.transpose(1, 2)[real], theirs.transpose(1, 2)[real], **TOL)
    as_tuple = ours.decoder(**kwargs, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state)


def test_cached_decoding_step_by_step_equals_full_forward():
    reference, ours = pair("relu")
    ids, mask, dec, _ = batch()
    full, _ = ours(ids, mask, dec)
    ref_full = reference(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(full, ref_full, **TOL)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    steps = []
    for t in range(dec.shape[1]):
        logits, out = ours(ids, mask, dec[:, t : t + 1], cache=cache, use_cache=True)
        assert getattr(out, t5core.CACHE_FIELD) is cache
        steps.append(logits)
    assert cache.get_seq_length() == dec.shape[1]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)


def test_decoder_without_cross_attention_equals_transformers_decoder_stack_alone():
    reference, _ = pair("relu")
    config = T5Config(**TINY_T5)
    ours = T5Stack(config, is_decoder=True, cross_attention=False).eval()
    state = {k.removeprefix("decoder."): v for k, v in reference.state_dict().items() if k.startswith("decoder.")}
    result = ours.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and all("layer.1." in k for k in result.unexpected_keys)
    ids, mask, *_ = batch()
    ref = reference.decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    out = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool() & mask.cumsum(-1).gt(0)
    torch.testing.assert_close(out[real], ref[real], **TOL)
    with pytest.raises(ValueError, match="no cross-attention"):
        ours(input_ids=ids, encoder_hidden_states=torch.zeros(3, 7, TINY_T5["d_model"]))


def test_eager_equals_sdpa_with_a_4d_bool_mask_and_inputs_embeds():
    _, ours = pair("relu", "sdpa")
    ids, mask, *_ = batch()
    allowed = torch.rand(3, 1, 7, 7, generator=torch.Generator().manual_seed(0)) > 0.3
    allowed |= torch.eye(7, dtype=torch.bool)  # every row sees at least itself
    embeds = ours.shared(ids)
    sdpa = ours.encoder(inputs_embeds=embeds, attention_mask=allowed).last_hidden_state
    ours.config._attn_implementation = "eager"
    eager = ours.encoder(inputs_embeds=embeds, attention_mask=allowed).last_hidden_state
    additive = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
    eager_float = ours.encoder(inputs_embeds=embeds, attention_mask=additive).last_hidden_state
    torch.testing.assert_close(sdpa, eager, **TOL)
    torch.testing.assert_close(eager_float, eager, **TOL)


def test_gradient_checkpointing_gives_the_same_gradients():
    _, ours = pair("gated-gelu")
    ids, mask, dec, dec_mask = batch()
    ours.train()
    grads = []
    for enabled in (False, True):
        ours.zero_grad()
        for stack in (ours.encoder, ours.decoder):
            stack.gradient_checkpointing = enabled
        logits, _ = ours(ids, mask, dec, dec_mask)
        logits.sum().backward()
        grads.append({n: p.grad.clone() for n, p in ours.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], **TOL, msg=name)


@pytest.mark.parametrize(
    ("relative", "bidirectional", "expected"),
    [
        # 8 buckets, max distance 16. Two-way: 4 per direction, 2 exact, then 2 + int(2 * log(d/2) / log 8)
        ([0, -1, 1, -3, 3, -8, 8, -100, 100], True, [0, 1, 5, 2, 6, 3, 7, 3, 7]),
        # one-way: every key after the query is bucket 0; 4 exact, then 4 + int(4 * log(d/4) / log 4), last 7
        ([0, 3, 50, -1, -3, -4, -8, -15, -16, -1000], False, [0, 0, 0, 1, 3, 4, 6, 7, 7, 7]),
    ],
)
def test_buckets_equal_the_closed_form(relative, bidirectional, expected):
    buckets = relative_position_bucket(torch.tensor(relative), bidirectional, num_buckets=8, max_distance=16)
    assert buckets.tolist() == expected


def test_forward_buckets_start_at_distance_one():
    relative = torch.tensor([1, 2, 4, 5, 9, 40, 0, -3])
    buckets = t5core.forward_relative_position_bucket(relative, num_buckets=8, max_distance=16)
    # distance d -> one-way bucket of d - 1; non-forward distances -> 0 (callers select them away)
    assert buckets.tolist() == [0, 1, 3, 4, 6, 7, 0, 0]


def test_layer_norm_in_half_precision_and_fp16_clamp():
    norm = T5LayerNorm(4).half()
    x = torch.tensor([[1.0, -2.0, 3.0, 60000.0]], dtype=torch.float16)
    y = norm(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()  # the variance is summed in fp32
    clamped = clamp_fp16(torch.tensor([float("inf"), -float("inf"), 1.0], dtype=torch.float16))
    assert torch.isfinite(clamped).all() and clamped[2] == 1.0
    assert clamp_fp16(torch.tensor([float("inf")])).isinf().all()  # fp32 is left alone


def test_cache_keyword_names():
    cache = DynamicCache()
    assert t5core.resolve_cache(None, cache) is cache and t5core.resolve_cache(cache, None) is cache
    with pytest.raises(ValueError, match="both"):
        t5core.resolve_cache(cache, DynamicCache())
    assert t5core.CACHE_FIELD in ("cache", "past_key_values")
