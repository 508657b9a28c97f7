"""EncT5 (arXiv 2110.08426) against transformers' T5 with copied weights and closed-form losses."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    ByT5Tokenizer,
    T5Config,
    T5EncoderModel,
    T5ForSequenceClassification,
    pipeline,
)
from transformers.models.t5.modeling_t5 import T5Stack

import t5lab  # noqa: F401  (registers EncT5 with the Auto classes)
from t5lab.models.enct5 import EncT5Config, EncT5ForSequenceClassification
from t5lab.models.loading import from_pretrained_with_report
from tests.conftest import TINY_T5
from tests.models.helpers import enable_checkpointing, output_cache

SINGLE, MULTI, REG = "single_label_classification", "multi_label_classification", "regression"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared, loaded CPU the OpenMP
    workers spin: one thread is ~30x faster here (measured on the 2-core CI box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_config(problem_type: str | None = SINGLE, num_labels: int = 3, **overrides) -> EncT5Config:
    """The reference API: from a T5 dict, then set the EncT5 fields as attributes."""
    config = EncT5Config.from_dict(T5Config(**{**TINY_T5, **overrides}).to_dict())
    config.num_decoder_layers = overrides.get("num_decoder_layers", 1)
    config.problem_type = problem_type
    config.num_labels = num_labels
    config.decoder_vocab_size = num_labels if problem_type == MULTI else 1
    return config


def make_model(
    problem_type: str | None = SINGLE, num_labels: int = 3, **overrides
) -> EncT5ForSequenceClassification:
    torch.manual_seed(0)
    model = EncT5ForSequenceClassification(make_config(problem_type, num_labels, **overrides)).eval()
    with torch.no_grad():  # non-zero bias so a wrong bias path shows up in comparisons
        model.classification_head.out_proj.bias.normal_()
    return model


def batch(b: int = 3, t: int = 7, pad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, TINY_T5["vocab_size"], (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    if pad:  # right padding of different lengths
        for i in range(1, b):
            mask[i, t - 2 * i :] = 0
        ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def test_config_from_t5_dict_becomes_enct5(tmp_path):
    converted = EncT5Config.from_dict(T5Config(**TINY_T5).to_dict())
    assert TINY_T5["num_decoder_layers"] == 2 and converted.num_decoder_layers == 1  # EncT5's depth
    assert converted.d_model == TINY_T5["d_model"] and converted.num_layers == TINY_T5["num_layers"]
    kept = EncT5Config.from_dict(T5Config(**TINY_T5).to_dict(), num_decoder_layers=2)
    assert kept.num_decoder_layers == 2
    config = make_config(SINGLE, 3)
    assert config.model_type == "enct5" and config.to_dict()["model_type"] == "enct5"
    assert config.num_decoder_layers == 1 and config.decoder_vocab_size == 1
    assert EncT5Config().num_decoder_layers == 1  # EncT5's default
    config.save_pretrained(tmp_path)
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk["model_type"] == "enct5"
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, EncT5Config)
    assert (loaded.num_labels, loaded.problem_type, loaded.decoder_vocab_size) == (3, SINGLE, 1)


def test_decoder_vocab_size_default_resolves_by_problem_type():
    for problem_type, num_labels, expected in [(MULTI, 4, 4), (SINGLE, 4, 1), (REG, 2, 1)]:
        config = EncT5Config(**TINY_T5, num_labels=num_labels, problem_type=problem_type)
        assert config.decoder_vocab_size is None
        model = EncT5ForSequenceClassification(config)
        assert config.decoder_vocab_size == expected
        assert model.decoder_embeddings.weight.shape == (expected, TINY_T5["d_model"])


# ---------------------------------------------------------------------------------------------
# Parity with transformers' T5 on copied weights
# ---------------------------------------------------------------------------------------------


def test_encoder_matches_hf_t5_encoder_model():
    model = make_model()
    hf = T5EncoderModel(T5Config(**TINY_T5)).eval()
    state = {k: v for k, v in model.state_dict().items() if k.startswith(("shared.", "encoder."))}
    hf.load_state_dict(state, strict=True)
    ids, mask = batch()
    ours = model(ids, attention_mask=mask, output_hidden_states=True).encoder_hidden_states[-1]
    ref = hf(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, ref)


def _hf_decoder(model: EncT5ForSequenceClassification) -> T5Stack:
    cfg = T5Config(
        **{**TINY_T5, "num_layers": model.config.num_decoder_layers, "is_decoder": True, "use_cache": False}
    )
    cfg._attn_implementation = "eager"
    stack = T5Stack(cfg).eval()
    missing, unexpected = stack.load_state_dict(model.decoder.state_dict(), strict=False)
    assert missing == ["embed_tokens.weight"] and unexpected == []  # every block weight was copied
    return stack


@pytest.mark.parametrize("num_decoder_layers", [1, 2])
def test_single_prompt_decoder_matches_hf_decoder_stack(num_decoder_layers):
    model = make_model(SINGLE, 3, num_decoder_layers=num_decoder_layers)
    hf = _hf_decoder(model)
    ids, mask = batch()
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    encoder_states = out.encoder_hidden_states[-1]
    prompts = model.decoder_embeddings(torch.zeros(ids.shape[0], 1, dtype=torch.long))  # (B, 1, d)
    ref = hf(inputs_embeds=prompts, encoder_hidden_states=encoder_states, encoder_attention_mask=mask)
    torch.testing.assert_close(out.decoder_hidden_states[-1], ref.last_hidden_state)
    # and the head is a plain linear layer on the single prompt's output
    head = model.classification_head.out_proj
    torch.testing.assert_close(out.logits, head(ref.last_hidden_state[:, 0]))


def test_multi_label_prompts_match_hf_decoder_with_full_self_attention():
    """P = num_labels prompts attend to each other (the reference passes an all-ones decoder mask)."""
    num_labels = 4
    model = make_model(MULTI, num_labels)
    hf = _hf_decoder(model)
    ids, mask = batch()
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    prompts = model.decoder_embeddings.weight.unsqueeze(0).expand(ids.shape[0], -1, -1)  # (B, L, d)
    full = torch.zeros(ids.shape[0], 1, num_labels, num_labels)  # additive 4D mask: nothing masked
    ref = hf(
        inputs_embeds=prompts,
        attention_mask=full,
        encoder_hidden_states=out.encoder_hidden_states[-1],
        encoder_attention_mask=mask,
    ).last_hidden_state  # (B, L, d)
    torch.testing.assert_close(out.decoder_hidden_states[-1], ref)
    head = model.classification_head.out_proj
    per_label = torch.stack([ref[:, i] @ head.weight[i] + head.bias[i] for i in range(num_labels)], dim=1)
    torch.testing.assert_close(out.logits, per_label)
    # a causal decoder would give a different first prompt: the mask really is bidirectional
    causal = hf(
        inputs_embeds=prompts, encoder_hidden_states=out.encoder_hidden_states[-1], encoder_attention_mask=mask
    )
    assert not torch.allclose(causal.last_hidden_state[:, 0], ref[:, 0], atol=1e-4)


@pytest.mark.parametrize("problem_type,num_labels", [(SINGLE, 3), (MULTI, 4)])
def test_eager_and_sdpa_agree(tmp_path, problem_type, num_labels):
    make_model(problem_type, num_labels).save_pretrained(tmp_path)
    eager = AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert sdpa.decoder.config._attn_implementation == "sdpa"
    assert eager.decoder.config._attn_implementation == "eager"
    ids, mask = batch()
    torch.testing.assert_close(eager(ids, attention_mask=mask).logits, sdpa(ids, attention_mask=mask).logits)


def test_default_attention_is_sdpa():
    assert make_model().config._attn_implementation == "sdpa"


def test_padding_does_not_change_logits():
    model = make_model(MULTI, 3)
    ids, _ = batch(1, 5, pad=False)
    alone = model(ids).logits
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 4])
    torch.testing.assert_close(model(padded, attention_mask=mask).logits, alone)


def test_init_matches_transformers_t5():
    """Fresh weights follow T5's scaled init (transformers' T5ForSequenceClassification), not N(0, 1)."""
    overrides = dict(d_model=64, d_kv=16, d_ff=128, vocab_size=256)
    ours = make_model(SINGLE, 3, **overrides)
    torch.manual_seed(0)
    ref = T5ForSequenceClassification(T5Config(**{**TINY_T5, **overrides}, num_labels=3))
    ref_params = dict(ref.named_parameters())
    checked = 0
    for name, param in ours.named_parameters():
        if not name.startswith(("encoder.block.", "decoder.block.0.")) or param.numel() < 256:
            continue
        ref_std = ref_params[f"transformer.{name}"].std()
        assert 0.7 < param.std() / ref_std < 1.4, (name, float(param.std()), float(ref_std))
        checked += 1
    assert checked > 15
    head = ours.classification_head.out_proj
    assert 0.7 < head.weight.std() * 64**0.5 < 1.4  # N(0, 1/sqrt(d_model)) as T5's classification head
    fresh = EncT5ForSequenceClassification(make_config(SINGLE, 3, **overrides))
    assert torch.count_nonzero(fresh.classification_head.out_proj.bias) == 0


def test_decoder_keeps_no_cache_and_prompts_see_each_other():
    """The cheap path: no KV cache even when asked, and no causal mask (a later prompt changes an earlier one)."""
    model = make_model(MULTI, 3)
    ids, mask = batch()
    out = model(ids, attention_mask=mask, use_cache=True)
    assert out.logits.shape == (3, 3) and output_cache(out) is None
    encoder_states = model.encoder(ids, attention_mask=mask).last_hidden_state
    prompts = model.decoder_embeddings(torch.arange(3)).expand(3, -1, -1)
    dec = model.decoder(inputs_embeds=prompts, encoder_hidden_states=encoder_states, use_cache=True)
    assert output_cache(dec) is None
    changed = prompts.clone()
    changed[:, 2] += 1.0
    again = model.decoder(inputs_embeds=changed, encoder_hidden_states=encoder_states)
    assert not torch.allclose(again.last_hidden_state[:, 0], dec.last_hidden_state[:, 0])


def test_cache_arguments_are_refused():
    model = make_model()
    ids, mask = batch()
    for name in ("cache", "past_key_values"):
        with pytest.raises(ValueError, match="no KV cache"):
            model(ids, attention_mask=mask, **{name: object()})


def test_precomputed_encoder_outputs_give_the_same_logits():
    model = make_model()
    ids, mask = batch()
    encoder_outputs = model.encoder(ids, attention_mask=mask)
    expected = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(model(encoder_outputs=encoder_outputs, attention_mask=mask).logits, expected)
    as_tuple = (encoder_outputs.last_hidden_state,)
    torch.testing.assert_close(model(encoder_outputs=as_tuple, attention_mask=mask).logits, expected)


def test_gradient_checkpointing_gives_the_same_gradients():
    ids, mask = batch()
    labels = torch.tensor([0, 2, 1])
    grads = []
    for checkpointing in (False, True):
        model = make_model(SINGLE, 3, num_decoder_layers=2)
        model.train()
        if checkpointing:
            enable_checkpointing(model)
            assert model.decoder.gradient_checkpointing and model.encoder.gradient_checkpointing
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


# ---------------------------------------------------------------------------------------------
# Heads and losses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem_type,num_labels", [(SINGLE, 3), (MULTI, 5), (REG, 1), (REG, 2)])
def test_logits_shape(problem_type, num_labels):
    model = make_model(problem_type, num_labels)
    ids, mask = batch(4)
    out = model(ids, attention_mask=mask, output_hidden_states=True)
    assert out.logits.shape == (4, num_labels)
    prompts = num_labels if problem_type == MULTI else 1
    assert out.decoder_hidden_states[-1].shape == (4, prompts, TINY_T5["d_model"])


def test_single_label_loss_is_cross_entropy_ignoring_minus_100():
    model = make_model(SINGLE, 3)
    ids, mask = batch(4)
    labels = torch.tensor([2, 0, -100, 1])
    out = model(ids, attention_mask=mask, labels=labels)
    logp = out.logits.log_softmax(-1)
    keep = labels != -100
    expected = -logp[keep].gather(1, labels[keep, None]).mean()
    torch.testing.assert_close(out.loss, expected)


def test_multi_label_loss_is_bce():
    model = make_model(MULTI, 3)
    ids, mask = batch(4)
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float)
    out = model(ids, attention_mask=mask, labels=labels)
    p = out.logits.sigmoid()
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    torch.testing.assert_close(out.loss, expected)
    # integer multi-hot works too
    torch.testing.assert_close(model(ids, attention_mask=mask, labels=labels.long()).loss, expected)


@pytest.mark.parametrize("num_labels,label_shape", [(1, (4,)), (1, (4, 1)), (2, (4, 2))])
def test_regression_loss_is_mse(num_labels, label_shape):
    model = make_model(REG, num_labels)
    ids, mask = batch(4)
    labels = torch.randn(label_shape)
    out = model(ids, attention_mask=mask, labels=labels)
    expected = ((out.logits - labels.reshape(4, num_labels)) ** 2).mean()
    torch.testing.assert_close(out.loss, expected)


def test_problem_type_inference_follows_transformers():
    ids, mask = batch(2)
    model = make_model(None, 1)
    model(ids, attention_mask=mask, labels=torch.tensor([0.5, -1.0]))
    assert model.config.problem_type == REG

    model = make_model(None, 3)
    model(ids, attention_mask=mask, labels=torch.tensor([2, 0]))
    assert model.config.problem_type == SINGLE

    model = make_model(None, 3)
    model.config.decoder_vocab_size = 3
    model = EncT5ForSequenceClassification(model.config).eval()  # room for one prompt per label
    out = model(ids, attention_mask=mask, labels=torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert model.config.problem_type == MULTI
    torch.testing.assert_close(
        out.loss, F.binary_cross_entropy_with_logits(out.logits, torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    )


def test_dummy_inputs_run():
    model = make_model(MULTI, 3)
    assert model(**model.dummy_inputs).logits.shape == (3, 3)


def test_return_dict_false_gives_tuple():
    model = make_model()
    ids, mask = batch()
    loss, logits = model(ids, attention_mask=mask, labels=torch.tensor([0, 1, 2]), return_dict=False)[:2]
    torch.testing.assert_close(logits, model(ids, attention_mask=mask).logits)


def test_attentions_with_eager():
    model = make_model(MULTI, 3)
    model.set_attn_implementation("eager")
    ids, mask = batch()
    out = model(ids, attention_mask=mask, output_attentions=True)
    assert len(out.encoder_attentions) == TINY_T5["num_layers"] and out.encoder_attentions[0].shape == (3, 4, 7, 7)
    assert out.decoder_attentions[0].shape == (3, 4, 3, 3)
    assert out.cross_attentions[0].shape == (3, 4, 3, 7)
    # padded encoder positions get no cross-attention
    assert out.cross_attentions[0][2, :, :, 7 - 4 :].abs().max() == 0


# ---------------------------------------------------------------------------------------------
# Loading from T5, re-initialising, saving
# ---------------------------------------------------------------------------------------------


def test_load_weights_from_pretrained_t5_copies_encoder_and_first_decoder_layers(t5_checkpoint, tiny_t5):
    model = make_model(SINGLE, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = model.load_weights_from_pretrained_t5(t5_checkpoint)
    ours, theirs = model.state_dict(), tiny_t5.state_dict()

    copied = [
        k
        for k in ours
        if k.startswith(("shared.", "encoder.", "decoder.block.0.", "decoder.final_layer_norm"))
    ]
    assert len(copied) > 20
    for name in copied:
        torch.testing.assert_close(ours[name], theirs[name], msg=name)
    new = [
        "classification_head.out_proj.bias",
        "classification_head.out_proj.weight",
        "decoder_embeddings.weight",
    ]
    assert report.new == new
    for name in new:
        torch.testing.assert_close(ours[name], before[name])  # left as they were
    assert set(report.used) == set(ours) - set(new)
    assert report.unused and all(k.startswith("decoder.block.1.") for k in report.unused)
    assert model.load_report is report


def test_auto_from_pretrained_on_plain_t5_dir(t5_checkpoint, tiny_t5):
    model, report = from_pretrained_with_report(
        AutoModelForSequenceClassification, t5_checkpoint, config=make_config(SINGLE, 2)
    )
    assert isinstance(model, EncT5ForSequenceClassification) and len(model.decoder.block) == 1
    assert "decoder_embeddings.weight" in report.new and "classification_head.out_proj.weight" in report.new
    assert any(k.startswith("decoder.block.1.") for k in report.unused)
    torch.testing.assert_close(
        model.state_dict()["decoder.block.0.layer.1.EncDecAttention.q.weight"],
        tiny_t5.state_dict()["decoder.block.0.layer.1.EncDecAttention.q.weight"],
    )
    # the class itself: the T5 config is converted (1 decoder layer), overrides as kwargs
    model2, report2 = from_pretrained_with_report(EncT5ForSequenceClassification, t5_checkpoint, num_labels=4)
    assert len(model2.decoder.block) == 1 and any(k.startswith("decoder.block.1.") for k in report2.unused)
    deep = EncT5ForSequenceClassification.from_pretrained(t5_checkpoint, num_decoder_layers=2)
    assert len(deep.decoder.block) == 2
    torch.testing.assert_close(
        deep.decoder.block[1].layer[2].DenseReluDense.wo.weight,
        tiny_t5.decoder.block[1].layer[2].DenseReluDense.wo.weight,
    )
    assert model2.config.model_type == "enct5" and model2.classification_head.out_proj.out_features == 4
    torch.testing.assert_close(
        model2.encoder.block[1].layer[1].DenseReluDense.wi.weight,
        tiny_t5.encoder.block[1].layer[1].DenseReluDense.wi.weight,
    )


def test_prepare_for_fine_tuning_changes_exactly_prompts_and_head(t5_checkpoint):
    model = make_model(SINGLE, 3)
    model.load_weights_from_pretrained_t5(t5_checkpoint)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.prepare_for_fine_tuning()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {
        "decoder_embeddings.weight",
        "classification_head.out_proj.weight",
        "classification_head.out_proj.bias",
    }
    assert torch.count_nonzero(after["classification_head.out_proj.bias"]) == 0


def test_save_load_round_trip_through_auto_class(tmp_path):
    model = make_model(MULTI, 3)
    ids, mask = batch()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "enct5"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, EncT5ForSequenceClassification)
    torch.testing.assert_close(
        loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits
    )


def test_text_classification_pipeline_runs():
    config = make_config(SINGLE, 3, vocab_size=384)  # ByT5's 256 bytes + 3 specials + 125 sentinels
    config.id2label = {0: "neg", 1: "neu", 2: "pos"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(0)
    model = EncT5ForSequenceClassification(config).eval()
    tokenizer = ByT5Tokenizer()
    clf = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    texts = ["a tiny test", "another, longer sentence to classify"]
    results = clf(texts)
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        probs = model(**enc).logits.softmax(-1)
    for result, p in zip(results, probs):
        assert result["label"] == config.id2label[int(p.argmax())]
        assert result["score"] == pytest.approx(float(p.max()), abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_multi_label_needs_a_prompt_per_label():
    with pytest.raises(ValueError, match="decoder_vocab_size >= num_labels"):
        EncT5Config(**TINY_T5, problem_type=MULTI, num_labels=3, decoder_vocab_size=2)
    config = make_config(MULTI, 3)
    config.decoder_vocab_size = 2  # set after construction, as the reference API does
    with pytest.raises(ValueError, match="decoder_vocab_size=2 < num_labels=3"):
        EncT5ForSequenceClassification(config)
    # inferred multi-label on a single-prompt model
    model = make_model(None, 3)
    ids, mask = batch(2)
    with pytest.raises(ValueError, match="one decoder prompt per label"):
        model(ids, attention_mask=mask, labels=torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
    assert model.config.problem_type is None  # the refused guess is not kept


def test_unknown_problem_type():
    with pytest.raises(ValueError, match="unknown"):
        EncT5Config(**TINY_T5, problem_type="ranking")
    config = make_config(SINGLE, 3)
    config.problem_type = "multi_class"
    with pytest.raises(ValueError, match="problem_type='multi_class' is unknown"):
        EncT5ForSequenceClassification(config)


def test_single_label_needs_two_classes():
    config = make_config(SINGLE, 3)
    config.num_labels = 1  # CE over one class is always 0: refuse instead of training nothing
    with pytest.raises(ValueError, match="num_labels >= 2"):
        EncT5ForSequenceClassification(config)


def test_label_errors():
    ids, mask = batch(2)
    single = make_model(SINGLE, 3)
    with pytest.raises(ValueError, match="needs integer class ids"):
        single(ids, attention_mask=mask, labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="class id 3 is out of range for num_labels=3"):
        single(ids, attention_mask=mask, labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="out of range"):
        single(ids, attention_mask=mask, labels=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="one class id per example"):
        single(ids, attention_mask=mask, labels=torch.tensor([[0, 1], [1, 2]]))

    reg = make_model(REG, 2)
    with pytest.raises(ValueError, match=r"regression with num_labels=2 needs labels of shape \(2, 2\)"):
        reg(ids, attention_mask=mask, labels=torch.tensor([0.5, 1.0]))
    reg1 = make_model(REG, 1)
    with pytest.raises(ValueError, match="num_labels=1 needs labels of shape"):
        reg1(ids, attention_mask=mask, labels=torch.randn(2, 3))

    multi = make_model(MULTI, 3)
    with pytest.raises(ValueError, match=r"multi-hot labels of shape \(2, 3\)"):
        multi(ids, attention_mask=mask, labels=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        multi(ids, attention_mask=mask, labels=torch.tensor([[2.0, 0, 0], [0, 1, 0]]))


def test_load_weights_errors(tmp_path, t5_checkpoint):
    model = make_model()
    with pytest.raises(ValueError, match="no T5 checkpoint"):
        model.load_weights_from_pretrained_t5(tmp_path / "missing")
    wide = EncT5ForSequenceClassification(make_config(SINGLE, 3, d_model=16))
    with pytest.raises(ValueError, match="d_model=32 \\(model: 16\\)"):
        wide.load_weights_from_pretrained_t5(t5_checkpoint)
    deep = EncT5ForSequenceClassification(make_config(SINGLE, 3, num_decoder_layers=3))
    with pytest.raises(ValueError, match="lower num_decoder_layers"):
        deep.load_weights_from_pretrained_t5(t5_checkpoint)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem_type,num_labels", [(SINGLE, 2), (MULTI, 2)])
def test_few_steps_learn_a_separable_problem(problem_type, num_labels):
    """Label = which half of the vocabulary the tokens come from (multi-label: one bit per half)."""
    model = make_model(problem_type, num_labels)
    model.train()
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (32,), generator=g)
    low = torch.randint(2, 32, (32, 6), generator=g)
    ids = torch.where(y[:, None] == 1, low + 32, low)
    labels = y if problem_type == SINGLE else F.one_hot(y, 2).float()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses
    model.eval()
    accuracy = (model(ids).logits.argmax(-1) == y).float().mean()
    assert accuracy == 1.0


def test_copy_of_config_is_independent():
    # the model resolves decoder_vocab_size into its config; a deep copy stays consistent
    model = make_model(MULTI, 3)
    clone = EncT5ForSequenceClassification(copy.deepcopy(model.config))
    assert clone.decoder_embeddings.weight.shape == model.decoder_embeddings.weight.shape


# ---------------------------------------------------------------------------------------------
# Absorbed cross-attention (key/value projections moved to the query side)
# ---------------------------------------------------------------------------------------------


def _set_absorb(model: EncT5ForSequenceClassification, absorb: bool | None) -> None:
    for block in model.decoder.block:
        block.layer[1].EncDecAttention.absorb_kv = absorb


def _count_key_projections(model: EncT5ForSequenceClassification) -> list[int]:
    calls = [0]
    for block in model.decoder.block:
        block.layer[1].EncDecAttention.k.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_absorbed_form_is_what_the_tests_against_transformers_exercise():
    """The HF-parity tests above run the default model: check that it takes the absorbed form there
    (it never calls the key projection on the encoder states) and at the bench's t5-small shape."""
    model = make_model(MULTI, 3, num_decoder_layers=2)
    calls = _count_key_projections(model)
    ids, mask = batch()
    model(ids, attention_mask=mask)
    assert calls[0] == 0
    _set_absorb(model, False)
    model(ids, attention_mask=mask)
    assert calls[0] == 2  # the standard form projects the states once per decoder layer
    small = EncT5Config(**{**TINY_T5, "d_model": 512, "d_kv": 64, "num_heads": 8, "num_decoder_layers": 1})
    attention = EncT5ForSequenceClassification(small).decoder.block[0].layer[1].EncDecAttention
    assert attention.uses_absorbed_form(1, 128)  # EncT5's one prompt over 128 tokens
    assert not attention.uses_absorbed_form(128, 128)  # as many queries as keys: the standard form


@pytest.mark.parametrize("problem_type,num_labels", [(SINGLE, 3), (MULTI, 4)])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_absorbed_cross_attention_equals_the_standard_form(problem_type, num_labels, attn):
    """Reference: transformers' T5Attention (absorb_kv=False) on the same weights; logits, loss and
    every gradient agree to fp32 rounding, padding included (bool mask for sdpa, additive for eager)."""
    model = make_model(problem_type, num_labels, num_decoder_layers=2).train()
    model.set_attn_implementation(attn)
    ids, mask = batch(4, 9)
    labels = torch.tensor([0, 1, 2, 1]) if problem_type == SINGLE else torch.rand(4, num_labels)
    results = {}
    for absorb in (False, True):
        _set_absorb(model, absorb)
        model.zero_grad(set_to_none=True)
        out = model(ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[absorb] = (out.logits.detach(), out.loss.detach(), grads)
    (ref_logits, ref_loss, ref_grads), (logits, loss, grads) = results[False], results[True]
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and any("EncDecAttention.k" in n for n in grads)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_absorbed_cross_attention_weights_equal_the_standard_ones():
    model = make_model(MULTI, 3)
    model.set_attn_implementation("eager")
    ids, mask = batch()
    absorbed = model(ids, attention_mask=mask, output_attentions=True).cross_attentions
    _set_absorb(model, False)
    standard = model(ids, attention_mask=mask, output_attentions=True).cross_attentions
    for ours, ref in zip(absorbed, standard, strict=True):
        torch.testing.assert_close(ours, ref)
    assert absorbed[0][2, :, :, 7 - 4 :].abs().max() == 0  # padding gets exactly zero weight


def test_absorbed_cross_attention_flops_follow_the_closed_form():
    """The cost claim of EncT5CrossAttention: no (T, d) x (d, inner) projection of the encoder states."""
    from torch.utils.flop_counter import FlopCounterMode

    model = make_model(SINGLE, 3)
    model.set_attn_implementation("eager")  # the flop counter does not see sdpa's CPU kernel
    attention = model.decoder.block[0].layer[1].EncDecAttention
    b, p, t = 3, 1, 20
    d, h, dk = TINY_T5["d_model"], TINY_T5["num_heads"], TINY_T5["d_kv"]
    inner = h * dk
    prompts, states = torch.randn(b, p, d), torch.randn(b, t, d)
    counts = {}
    for absorb in (True, False):
        attention.absorb_kv = absorb
        with FlopCounterMode(display=False) as counter:
            attention(prompts, key_value_states=states)
        counts[absorb] = counter.get_total_flops()
    q_and_o = 2 * 2 * b * p * d * inner
    assert counts[True] == q_and_o + 2 * b * h * p * (dk * d + d * t + t * d + d * dk)
    assert counts[False] == q_and_o + 2 * 2 * b * t * d * inner + 2 * 2 * b * h * p * t * dk
