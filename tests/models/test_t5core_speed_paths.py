"""The training-speed paths of the core and decoder_only against the paths they replace, bit for bit.

- ``t5core._sdpa_would_run_math``: with a bias that needs a gradient, SDPA on CPU runs its unfused
  math kernel; our eager path runs instead. Reference: the same model with the switch off (SDPA).
- ``decoder_only.TiedLMHead``: the LM head's custom backward. Reference: ``nn.Linear`` (autograd's
  own linear) on the same weights, tied to the embedding as in the model.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from t5lab.models import t5core
from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM, TiedLMHead
from tests.conftest import TINY_T5

TINY = {k: v for k, v in TINY_T5.items() if k not in ("num_decoder_layers", "decoder_start_token_id")}


def _model(**overrides) -> T5DecoderOnlyForCausalLM:
    torch.manual_seed(0)
    return T5DecoderOnlyForCausalLM(T5DecoderOnlyConfig(**{**TINY, **overrides})).train()


def _batch(batch: int = 3, src: int = 5, tgt: int = 6, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, TINY["vocab_size"], (batch, src + tgt), generator=g)
    labels = ids.clone()
    labels[:, :src] = -100
    prefix = torch.zeros_like(ids)
    prefix[:, :src] = 1
    attention = torch.ones_like(ids)
    attention[0, :2] = 0  # left padding in one row: a mask with hidden keys
    prefix[0, :2] = 0
    return dict(input_ids=ids, attention_mask=attention, labels=labels, prefix_mask=prefix, logits_to_keep=tgt + 1)


def _loss_and_grads(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_identical(a, b) -> None:
    loss_a, grads_a = a
    loss_b, grads_b = b
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name


# ---------------------------------------------------------------------------------------------
# eager instead of SDPA's math fallback
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [True, False])
def test_training_step_with_eager_fallback_equals_sdpa_bit_for_bit(monkeypatch, prefix):
    model = _model()
    assert model.config._attn_implementation == "sdpa"  # the reference below is SDPA, not eager again
    batch = _batch()
    if not prefix:
        batch.pop("prefix_mask")  # a (B, 1, 1, K) padding mask folded into the (1, H, T, K) bias
    calls = []
    real = t5core._sdpa_would_run_math

    def spy(*args):
        calls.append(real(*args))
        return calls[-1]

    monkeypatch.setattr(t5core, "_sdpa_would_run_math", spy)
    fast = _loss_and_grads(model, batch)
    assert calls and all(calls)  # the eager path ran in every layer
    monkeypatch.setattr(t5core, "_sdpa_would_run_math", lambda *args: False)
    _assert_identical(fast, _loss_and_grads(model, batch))


def test_eager_fallback_only_where_sdpa_would_run_math():
    q = torch.zeros(1, 2, 3, 4)
    bias = torch.zeros(1, 2, 3, 3, requires_grad=True)
    assert t5core._sdpa_would_run_math(q, bias, 0.0)
    assert not t5core._sdpa_would_run_math(q, bias.detach(), 0.0)  # inference: SDPA's fused kernel
    assert not t5core._sdpa_would_run_math(q, None, 0.0)
    assert not t5core._sdpa_would_run_math(q, bias, 0.1)  # dropout: left to SDPA
    assert not t5core._sdpa_would_run_math(q.bfloat16(), bias, 0.0)
    with torch.no_grad():
        assert not t5core._sdpa_would_run_math(q, bias, 0.0)


# ---------------------------------------------------------------------------------------------
# the LM head's fresh weight gradient
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contiguous", "sliced", "flat"])
def test_tied_head_gradients_equal_nn_linear(layout):
    torch.manual_seed(0)
    embedding = nn.Embedding(50, 16)
    ours = TiedLMHead(16, 50, bias=False)
    ours.weight = embedding.weight
    ids = torch.randint(0, 50, (3, 7))

    def run(head):
        embedding.weight.grad = None
        hidden = torch.tanh(embedding(ids))  # (3, 7, 16)
        if layout == "sliced":
            hidden = hidden[:, -4:]  # a non-contiguous view (no output scaling)
        elif layout == "flat":
            hidden = hidden.reshape(-1, 16)[::2]
        logits = head(hidden)
        (logits.square().mean() + logits[..., 0].sum()).backward()
        return logits.detach(), embedding.weight.grad.clone()

    reference = nn.Linear(16, 50, bias=False)
    reference.weight = embedding.weight
    logits, grad = run(ours)
    logits_ref, grad_ref = run(reference)
    assert torch.equal(logits, logits_ref)
    assert torch.equal(grad, grad_ref)


def test_decoder_only_training_step_equals_the_nn_linear_head():
    model = _model()
    batch = _batch()
    reference = copy.deepcopy(model)
    reference.lm_head.__class__ = nn.Linear  # autograd's own linear, same (tied) weight
    assert reference.lm_head.weight is reference.shared.weight
    _assert_identical(_loss_and_grads(model, batch), _loss_and_grads(reference, batch))


def _out_of_place_weight_adds(model, batch) -> int:
    """``aten::add`` calls on ``(vocab, d_model)`` tensors in one backward: the tied weight's gradient
    accumulated into a new tensor instead of in place."""
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    shape = [model.config.vocab_size, model.config.d_model]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        loss.backward()
    return sum(e.count for e in prof.key_averages(group_by_input_shape=True)
               if e.key == "aten::add" and e.input_shapes[:1] == [shape])


def test_tied_gradient_is_accumulated_in_place():
    model = _model()
    batch = _batch()
    assert _out_of_place_weight_adds(model, batch) == 0
    reference = copy.deepcopy(model)
    reference.lm_head.__class__ = nn.Linear
    # the mechanism: with autograd's linear the embedding's gradient is added out of place (torch 2.13);
    # if a torch release makes that in place too, this head is no longer needed
    assert _out_of_place_weight_adds(reference, batch) >= 1


def test_tied_head_falls_back_to_nn_linear_outside_plain_training():
    head = TiedLMHead(8, 5, bias=False)
    x = torch.randn(2, 8)
    assert type(head(x).grad_fn).__name__ == "_FreshWeightGradLinearBackward"
    with torch.no_grad():
        assert head(x).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
    assert out.dtype == torch.bfloat16 and "FreshWeightGrad" not in type(out.grad_fn).__name__
    with_bias = TiedLMHead(8, 5, bias=True)
    assert "FreshWeightGrad" not in type(with_bias(x).grad_fn).__name__
    torch.testing.assert_close(head(x), nn.functional.linear(x, head.weight), rtol=0, atol=0)
