"""Hook points: they never change outputs, every listed name fires, caches equal the model's own
hidden states and attentions, gradients flow through hook functions, hooks go away on errors."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.testing import assert_close

from t5lab.errors import T5LabError
from t5lab.explore.attention import eager_attention
from t5lab.explore.hooks import hook_names, hook_points, hooks, measure_overhead, run_with_cache
from tests.explore.conftest import LM_FACTORIES, T5_KW


def _model(module: str, config: str, cls: str, **extra):
    mod = importlib.import_module(f"t5lab.models.{module}")
    torch.manual_seed(0)
    return getattr(mod, cls)(getattr(mod, config)(**{**T5_KW, **extra})).eval()


FACTORIES = {
    "t5": LM_FACTORIES["t5"],
    "pseudo_dec": LM_FACTORIES["pseudo_dec"],
    "decoder_only": LM_FACTORIES["decoder_only"],
    "prefix_lm": LM_FACTORIES["prefix_lm"],
    "t5_gated": lambda: _model("pseudo_decoder", "T5PseudoDecConfig", "T5PseudoDecForConditionalGeneration",
                               feed_forward_proj="gated-gelu"),
    "enct5": lambda: _model("enct5", "EncT5Config", "EncT5ForSequenceClassification", num_labels=3, num_decoder_layers=1,
                            problem_type="single_label_classification"),
    "t5_value": lambda: _model("value_head", "T5WithValueHeadConfig", "T5HeadWithValueModel"),
    "pseudo_dec_value": lambda: _model("value_head", "T5PseudoDecWithValueHeadConfig", "T5PseudoDecWithValueHead"),
    "decoder_only_value": lambda: _model("value_head", "T5DecoderOnlyWithValueHeadConfig", "T5DecoderOnlyWithValueHead"),
}
SEQ2SEQ = {"t5", "pseudo_dec", "t5_gated", "t5_value", "pseudo_dec_value"}
CAUSAL = {"decoder_only", "prefix_lm", "decoder_only_value"}


def _inputs(variant: str) -> dict[str, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 8, 9, 1], [10, 11, 12, 1, 0, 0]])
    mask = (ids != 0).long()
    if variant in SEQ2SEQ:
        return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": torch.tensor([[0, 20, 21, 22], [0, 23, 24, 25]])}
    if variant == "prefix_lm":
        return {"input_ids": ids, "attention_mask": mask, "prefix_mask": torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])}
    return {"input_ids": ids, "attention_mask": mask}


def _outputs(out) -> list[torch.Tensor]:
    # value heads: logits and values (the field is `value`; `values` before it was renamed)
    found = [out[k] for k in ("logits", "value", "values") if out.get(k) is not None]
    assert found, list(out.keys())
    return found


def _hook_count(model) -> int:
    """Torch hooks on the model (a model may keep its own, e.g. a value head's)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(params=list(FACTORIES))
def variant(request):
    return request.param


def test_hooks_never_change_outputs(variant):
    model, inputs = FACTORIES[variant](), _inputs(variant)
    with torch.no_grad():
        plain = _outputs(model(**inputs))
    before = _hook_count(model)  # transformers' output recorders stay on some models after a forward
    with torch.no_grad():
        cache = run_with_cache(model, inputs)  # every point, read only (patterns: eager attention)
        with hooks(model, {n: (lambda x, p: x.clone()) for n in hook_names(model)}):  # every point replaced by itself
            replaced = _outputs(model(**inputs))
    for a, b, c in zip(plain, _outputs(cache.output), replaced):
        assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert_close(c, a, rtol=1e-5, atol=1e-5)
    assert _hook_count(model) == before


def test_every_listed_name_fires(variant):
    model, inputs = FACTORIES[variant](), _inputs(variant)
    names = hook_names(model)
    counts = dict.fromkeys(names, 0)

    def count(x, point):
        counts[point.name] += 1

    with torch.no_grad(), hooks(model, {n: count for n in names}):
        model(**inputs)
    assert [n for n, c in counts.items() if c == 0] == []
    assert len(names) == len(set(names))


def test_names_per_variant():
    t5 = hook_names(FACTORIES["t5"]())
    assert "encoder.blocks.1.attn.hook_pattern" in t5 and "decoder.blocks.1.cross_attn.hook_z" in t5
    assert "decoder.blocks.0.mlp.hook_post" in t5 and "decoder.ln_final.hook_normalized" in t5
    pseudo = hook_names(FACTORIES["pseudo_dec"]())
    assert [n for n in pseudo if n.startswith("encoder.")] == [
        "encoder.hook_embed", "encoder.hook_pos_embed", "encoder.ln_final.hook_scale", "encoder.ln_final.hook_normalized",
    ]
    dec = hook_names(FACTORIES["decoder_only"]())
    assert not [n for n in dec if n.startswith("encoder.") or "cross" in n]
    gated = hook_names(FACTORIES["t5_gated"]())
    assert "decoder.blocks.0.mlp.hook_pre_linear" in gated
    enc = hook_names(FACTORIES["enct5"]())
    assert "decoder.blocks.0.cross_attn.hook_k" in enc and "decoder.blocks.1.hook_resid_post" not in enc


@pytest.mark.parametrize("variant", ["t5", "pseudo_dec", "decoder_only"])
def test_generate_with_kv_cache_unchanged_under_hooks(variant):
    model = FACTORIES[variant]()
    inputs = {k: v[:1, :4] for k, v in _inputs(variant).items() if k != "decoder_input_ids"}
    kw = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    plain = model.generate(**inputs, **kw)
    fired = []
    names = [n for n in hook_names(model) if not n.endswith("hook_pattern")]
    with hooks(model, {n: (lambda x, p: fired.append(p.name)) for n in names}):
        hooked = model.generate(**inputs, **kw)
    assert torch.equal(plain, hooked)
    assert fired.count(names[-1]) == 4  # the decoder's final norm once per new token


def _reference_states(variant, model, inputs):
    with torch.no_grad(), eager_attention(model):
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
    if variant in CAUSAL:
        return {"decoder": (out.hidden_states, out.attentions, None)}
    refs = {"decoder": (out.decoder_hidden_states, out.decoder_attentions, out.cross_attentions)}
    if getattr(out, "encoder_attentions", None):
        refs["encoder"] = (out.encoder_hidden_states, out.encoder_attentions, None)
    return refs


@pytest.mark.parametrize("variant", ["t5", "pseudo_dec", "decoder_only", "prefix_lm"])
def test_cache_equals_hidden_states_and_attentions(variant):
    model, inputs = FACTORIES[variant](), _inputs(variant)
    cache = run_with_cache(model, inputs)
    for stack, (hidden, self_attn, cross) in _reference_states(variant, model, inputs).items():
        layers = cache.layers[stack]
        assert len(hidden) == layers + 1
        for i in range(layers):
            assert_close(cache[f"{stack}.blocks.{i}.hook_resid_pre"], hidden[i])
            assert_close(cache[f"{stack}.blocks.{i}.attn.hook_pattern"], self_attn[i])
            if cross is not None:
                assert_close(cache[f"{stack}.blocks.{i}.cross_attn.hook_pattern"], cross[i])
        assert_close(cache[f"{stack}.ln_final.hook_normalized"], hidden[-1])
        assert cache.stack("resid_post", stack).shape == (layers, *hidden[0].shape)
        assert_close(cache.accumulated_resid(stack)[1:-1], torch.stack(hidden[1:-1]))


def test_cache_parts_add_up():
    """resid_mid = resid_pre + attn_out; heads' results sum to attn_out; q k^T + bias softmax = pattern."""
    model, inputs = FACTORIES["t5"](), _inputs("t5")
    c = run_with_cache(model, inputs)
    for i in range(2):
        b = f"decoder.blocks.{i}"
        assert_close(c[f"{b}.hook_resid_mid"], c[f"{b}.hook_resid_pre"] + c[f"{b}.attn.hook_attn_out"])
        assert_close(c[f"{b}.hook_resid_mid_cross"], c[f"{b}.hook_resid_mid"] + c[f"{b}.cross_attn.hook_attn_out"])
        assert_close(c[f"{b}.hook_resid_post"], c[f"{b}.hook_resid_mid_cross"] + c[f"{b}.mlp.hook_mlp_out"])
        assert_close(c[f"{b}.cross_attn.hook_result"].sum(2), c[f"{b}.cross_attn.hook_attn_out"], atol=1e-6, rtol=1e-5)
        assert_close(c.head(f"{b}.attn.hook_z", 1), c[f"{b}.attn.hook_z"][:, :, 1])
    z = c["encoder.blocks.0.attn.hook_z"]
    pattern, v = c["encoder.blocks.0.attn.hook_pattern"], c["encoder.blocks.0.attn.hook_v"]
    assert_close(z, torch.einsum("bhqk,bkhd->bqhd", pattern, v), atol=1e-6, rtol=1e-5)
    scale = c["decoder.ln_final.hook_scale"]
    weight = model.decoder.final_layer_norm.weight
    assert_close(c["decoder.ln_final.hook_normalized"], weight * c["decoder.blocks.1.hook_resid_post"] * scale)


def test_replacements_patch_the_forward():
    model, inputs = FACTORIES["t5"](), _inputs("t5")
    with torch.no_grad():
        embeds = model.shared(inputs["input_ids"]) * 2
        ref = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], decoder_input_ids=inputs["decoder_input_ids"]).logits
        with hooks(model, {"encoder.hook_embed": lambda x, p: x * 2}):
            doubled = model(**inputs).logits
        assert_close(doubled, ref)
        # zeroing one head's z == ablate_heads (the explorer's existing hook on `o`)
        from t5lab.explore.heads import ablate_heads

        with ablate_heads(model, {"decoder.1.cross": [2]}):
            ablated = model(**inputs).logits

        def zero_head(z, p):
            z = z.clone()
            z[:, :, 2] = 0
            return z

        with hooks(model, {"decoder.blocks.1.cross_attn.hook_z": zero_head}):
            zeroed = model(**inputs).logits
        assert_close(zeroed, ablated)
        result = {"decoder.blocks.1.cross_attn.hook_result": lambda r, p: r * torch.tensor([1.0, 1.0, 0.0, 1.0])[:, None]}
        with hooks(model, result):
            assert_close(model(**inputs).logits, ablated, atol=1e-6, rtol=1e-5)
        # a uniform cross-attention pattern recomputes o(pattern @ v)
        with hooks(model, {"decoder.blocks.0.cross_attn.hook_pattern": lambda a, p: torch.full_like(a, 1 / a.shape[-1])}):
            uniform = model(**inputs).logits
        assert not torch.allclose(uniform, model(**inputs).logits)


def test_gradients_flow_through_hook_functions():
    model, inputs = FACTORIES["t5"](), _inputs("t5")
    gain = torch.ones(32, requires_grad=True)
    with hooks(model, {"decoder.blocks.0.hook_resid_mid": lambda x, p: x * gain}):
        model(**inputs).logits.square().sum().backward()
    assert gain.grad is not None and gain.grad.abs().sum() > 0
    assert model.encoder.block[0].layer[0].SelfAttention.q.weight.grad.abs().sum() > 0
    cache = run_with_cache(model, inputs, "decoder.blocks.1.hook_resid_post", grad=True)
    cache["decoder.blocks.1.hook_resid_post"].sum().backward()  # the graph is kept with grad=True


def test_hooks_removed_after_exceptions():
    model, inputs = FACTORIES["t5"](), _inputs("t5")
    assert _hook_count(model) == 0

    def boom(x, p):
        raise RuntimeError("inside a hook")

    with pytest.raises(RuntimeError, match="inside a hook"), hooks(model, {"decoder.blocks.0.attn.hook_z": boom}):
        model(**inputs)
    with pytest.raises(ValueError, match="body"), hooks(model, {"encoder.hook_embed": lambda x, p: x}):
        raise ValueError("body")
    assert _hook_count(model) == 0
    with pytest.raises(T5LabError, match="returned"), hooks(model, {"decoder.hook_embed": lambda x, p: x[:, :1]}):
        model(**inputs)
    assert _hook_count(model) == 0
    with pytest.raises(RuntimeError), hooks(model, {"encoder.blocks.0.attn.hook_pattern": boom}):
        model(**inputs)
    assert _hook_count(model) == 0 and model.config._attn_implementation == "sdpa"  # eager switched back


@pytest.mark.parametrize(
    "names, message",
    [
        ({"decoder.blocks.9.attn.hook_z": None}, "unknown hook point 'decoder.blocks.9.attn.hook_z'"),
        ({"decoder.blocks.0.attn.hook_zz": None}, "did you mean 'decoder.blocks.0.attn.hook_z'"),
        ({"encoder.blocks.0.cross_attn.hook_z": None}, "unknown hook point"),
    ],
)
def test_unknown_names_are_one_line_errors(names, message):
    model = FACTORIES["t5"]()
    with pytest.raises(T5LabError, match=message) as err, hooks(model, names):
        pass
    assert "\n" not in str(err.value)
    with pytest.raises(T5LabError, match="no hook point matches"):
        run_with_cache(model, _inputs("t5"), "*.hook_nothing")
    with pytest.raises(T5LabError, match="unknown hook point"):
        run_with_cache(model, _inputs("t5"), "encoder.hook_resid_post")["decoder.hook_embed"]
    with pytest.raises(T5LabError, match="no T5 encoder/decoder stack"):
        hook_names(LM_FACTORIES["gpt2"]())


def test_globs_pruned_heads_and_overhead():
    model, inputs = FACTORIES["t5"](), _inputs("t5")
    cache = run_with_cache(model, inputs, ["decoder.*.hook_resid_post", "encoder.hook_embed"])
    assert list(cache) == ["encoder.hook_embed", "decoder.blocks.0.hook_resid_post", "decoder.blocks.1.hook_resid_post"]
    from t5lab.explore.heads import prune_heads

    prune_heads(model, {"encoder.0": [1]})
    before = _hook_count(model)  # pruning's own
    assert hook_points(model)["encoder.blocks.0.attn.hook_z"].heads == (3, 8)
    assert run_with_cache(model, inputs, "encoder.blocks.0.attn.hook_z")["encoder.blocks.0.attn.hook_z"].shape[2] == 3
    figures = measure_overhead(model, inputs, repeats=2)
    assert set(figures) == {"plain_ms", "empty_hooks_ms", "ratio", "all_hooks_ms", "all_hooks_ratio"}
    assert _hook_count(model) == before


def test_enct5_absorbed_cross_attention_is_switched_only_inside_the_block():
    model, inputs = FACTORIES["enct5"](), _inputs("enct5")
    attn = model.decoder.block[0].layer[1].EncDecAttention
    assert attn.uses_absorbed_form(1, inputs["input_ids"].shape[1])  # tiny sizes: the absorbed form
    with torch.no_grad():
        plain = model(**inputs).logits
        with hooks(model, {"decoder.blocks.0.cross_attn.hook_k": lambda k, p: None}):
            assert attn.absorb_kv is False
            assert_close(model(**inputs).logits, plain, atol=1e-5, rtol=1e-5)
    assert "absorb_kv" not in attn.__dict__ and attn.absorb_kv is None
