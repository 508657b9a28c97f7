"""Head ablation and pruning: ablated == zeroed output-projection slice, pruned == ablated."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

import t5lab
from t5lab.errors import T5LabError
from t5lab.explore.heads import attention_sites
from tests.explore.conftest import LM_FACTORIES, byte_tokenizer, tiny_gpt2, tiny_t5


def _batch(model, tokenizer):
    enc = tokenizer(["hello there", "abc"], padding=True, return_tensors="pt")
    if getattr(model.config, "is_encoder_decoder", False):
        labels = tokenizer(["xyz!", "ok"], padding=True, return_tensors="pt")["input_ids"]
        return {**enc, "decoder_input_ids": model._shift_right(labels)}
    if getattr(model.config, "prefix_lm", False):
        return {**enc, "prefix_mask": enc["attention_mask"] * (torch.arange(enc["input_ids"].shape[1]) < 3)}
    return enc


SEQ2SEQ_SPEC = {"encoder.0": [1], "encoder.1": [1, 3], "decoder.0": [0, 2], "decoder.1": [3]}
CAUSAL_SPEC = {"decoder.0": [1], "decoder.1": [0, 2]}


@torch.no_grad()
def test_ablation_equals_zeroing_the_heads_slice_of_the_output_projection():
    model, tokenizer = tiny_t5(), byte_tokenizer()
    batch = _batch(model, tokenizer)
    base = model(**batch).logits
    with t5lab.ablate_heads(model, {"decoder.1": [2], "encoder.0": [0], "decoder.0.cross": [1]}):
        ablated = model(**batch).logits
    assert_close(model(**batch).logits, base)  # hooks are gone after the block
    assert not torch.allclose(ablated, base, atol=1e-4)  # ablating changes the outputs
    ref = copy.deepcopy(model)
    d = model.config.d_kv
    for attn, head in [
        (ref.decoder.block[1].layer[0].SelfAttention, 2),
        (ref.encoder.block[0].layer[0].SelfAttention, 0),
        (ref.decoder.block[0].layer[1].EncDecAttention, 1),
    ]:
        attn.o.weight[:, head * d : (head + 1) * d] = 0.0  # (d_model, H * D): input columns of head
    assert_close(ablated, ref(**batch).logits)


@torch.no_grad()
def test_gpt2_ablation_equals_zeroing_c_proj_rows():
    model, tokenizer = tiny_gpt2(), byte_tokenizer()
    batch = _batch(model, tokenizer)
    with t5lab.ablate_heads(model, {1: [3]}):
        ablated = model(**batch).logits
    ref = copy.deepcopy(model)
    d = model.config.n_embd // model.config.n_head
    ref.transformer.h[1].attn.c_proj.weight[3 * d : 4 * d] = 0.0  # Conv1D weight is (in, out)
    assert_close(ablated, ref(**batch).logits)


@pytest.mark.parametrize("variant", ["t5", "pseudo_dec", "decoder_only", "prefix_lm"])
@torch.no_grad()
def test_pruned_equals_ablated(variant):
    model, tokenizer = LM_FACTORIES[variant](), byte_tokenizer()
    spec = SEQ2SEQ_SPEC if model.config.is_encoder_decoder else CAUSAL_SPEC
    spec = {k: v for k, v in spec.items() if k in attention_sites(model)}  # the pseudo encoder has no attention
    batch = _batch(model, tokenizer)
    with t5lab.ablate_heads(model, spec):
        ablated = model(**batch).logits
    pruned = t5lab.prune_heads(copy.deepcopy(model), spec)
    assert_close(pruned(**batch).logits, ablated, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ablated, model(**batch).logits, atol=1e-4)
    sites = attention_sites(pruned)
    for name, heads in spec.items():
        attn = sites[name].module
        H, D = model.config.num_heads, model.config.d_kv
        assert attn.n_heads == H - len(heads) and attn.inner_dim == attn.n_heads * D
        assert attn.q.weight.shape == (attn.inner_dim, model.config.d_model)
        assert attn.o.weight.shape == (model.config.d_model, attn.inner_dim)


@torch.no_grad()
def test_pruning_a_head_from_every_layer_shrinks_the_relative_bias_table():
    model, tokenizer = tiny_t5(), byte_tokenizer()
    batch = _batch(model, tokenizer)
    spec = {"encoder.0": [2], "encoder.1": [2]}
    with t5lab.ablate_heads(model, spec):
        ablated = model(**batch).logits
    t5lab.prune_heads(model, {"encoder.0": [2]})
    bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
    assert bias.weight.shape[1] == 4  # encoder.1 still reads head 2's bias column
    t5lab.prune_heads(model, {"encoder.1": [2]})
    assert model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.shape == (8, 3)
    assert_close(model(**batch).logits, ablated, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_pruned_model_generates_like_the_ablated_model_with_kv_cache():
    model, tokenizer = tiny_t5(), byte_tokenizer()
    spec = {"decoder.0": [1], "decoder.1": [0, 3]}
    with t5lab.ablate_heads(model, spec):
        ablated = t5lab.sample(model, tokenizer, ["abc", "hello"], max_new_tokens=5, temperature=0)
    pruned = t5lab.prune_heads(copy.deepcopy(model), spec)
    assert t5lab.sample(pruned, tokenizer, ["abc", "hello"], max_new_tokens=5, temperature=0) == ablated


def test_bad_layers_and_heads_are_clear_errors():
    model = tiny_t5()
    with pytest.raises(T5LabError, match="no attention layer 'decoder.7'"):
        t5lab.prune_heads(model, {"decoder.7": [0]})
    with pytest.raises(T5LabError, match=r"head\(s\) \[4\] out of range"):
        with t5lab.ablate_heads(model, {"encoder.0": [4]}):
            pass
    with pytest.raises(T5LabError, match="ambiguous"):
        t5lab.prune_heads(model, {0: [1]})
    with pytest.raises(T5LabError, match="keep at least one"):
        t5lab.prune_heads(model, {"encoder.0": [0, 1, 2, 3]})
    with pytest.raises(T5LabError, match="only T5 self-attention"):
        t5lab.prune_heads(model, {"decoder.0.cross": [0]})


@torch.no_grad()
def test_enct5_classifier_heads_and_attention():
    from tests.explore.conftest import _variant

    model = _variant("enct5", "EncT5Config", "EncT5ForSequenceClassification", num_labels=3)
    tokenizer = byte_tokenizer()
    enc = tokenizer(["good movie", "bad"], padding=True, return_tensors="pt")
    spec = {"encoder.0": [1], "encoder.1": [0, 3]}
    with t5lab.ablate_heads(model, spec):
        ablated = model(**enc).logits  # (B, num_labels)
    assert not torch.allclose(ablated, model(**enc).logits, atol=1e-5)
    pruned = t5lab.prune_heads(copy.deepcopy(model), spec)
    assert_close(pruned(**enc).logits, ablated, rtol=1e-5, atol=1e-5)
    maps = t5lab.attention_maps(model, tokenizer, "good movie")
    assert maps["encoder"].shape[-1] == 11  # 10 bytes + </s>
    torch.testing.assert_close(maps["encoder"].sum(-1), torch.ones(maps["encoder"].shape[:-1]))
    with pytest.raises(T5LabError, match="is a classifier"):
        t5lab.sample(model, tokenizer, "good")
