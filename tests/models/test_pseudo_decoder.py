"""Pseudo decoder-only T5: references are HF T5 modules with copied weights and closed-form formulas."""

from __future__ import annotations

import copy

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.models.t5.modeling_t5 import T5Stack

import t5lab  # noqa: F401  (registers the Auto classes)
from t5lab.compat import output_cache
from t5lab.models.pseudo_decoder import (
    T5PseudoDecConfig,
    T5PseudoDecForConditionalGeneration,
    T5PseudoEncoder,
    is_causal_lm_batch,
)
from tests.conftest import TINY_T5

PAD, EOS = 0, 1


def make_model(seed: int = 0, attn: str = "sdpa", **overrides) -> T5PseudoDecForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5PseudoDecConfig(**{**TINY_T5, "max_position_embeddings": 16, **overrides})
    config._attn_implementation = attn
    model = T5PseudoDecForConditionalGeneration(config).eval()
    # Layer norms start at 1; randomise them so that tests see a wrong weight.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Closed-form T5LayerNorm (RMSNorm without bias)."""
    return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def shift_right(x: torch.Tensor, start: int = PAD) -> torch.Tensor:
    out = torch.full_like(x, start)
    out[:, 1:] = x[:, :-1]
    return out.masked_fill(out == -100, PAD)


@pytest.fixture
def batch():
    """A right-padded batch: (input_ids, attention_mask, labels with -100 on padding)."""
    torch.manual_seed(1)
    ids = torch.randint(2, TINY_T5["vocab_size"], (3, 7))
    lengths = torch.tensor([7, 5, 3])
    mask = (torch.arange(7)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, PAD)
    ids[torch.arange(3), lengths - 1] = EOS
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


@pytest.fixture
def t5_dir(tmp_path, tiny_t5):
    """A plain T5 checkpoint whose layer norms are random (so copying them is visible)."""
    with torch.no_grad():
        for name, p in tiny_t5.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    path = tmp_path / "t5"
    tiny_t5.save_pretrained(path)
    return str(path)


# ------------------------------------------------------------------------------------------------
# Config and registration
# ------------------------------------------------------------------------------------------------


def test_config_from_plain_t5_dict_gets_pseudo_dec_model_type():
    config = T5PseudoDecConfig.from_dict(T5Config(**TINY_T5).to_dict())
    assert config.model_type == "t5_pseudo_dec"
    assert config.to_dict()["model_type"] == "t5_pseudo_dec"
    assert config.d_model == TINY_T5["d_model"] and config.position_blind is False
    assert isinstance(AutoConfig.for_model("t5_pseudo_dec"), T5PseudoDecConfig)


def test_config_rejects_empty_position_table():
    # transformers' @strict configs wrap validator errors in huggingface_hub's validation error
    with pytest.raises(StrictDataclassClassValidationError, match="max_position_embeddings must be >= 1"):
        T5PseudoDecConfig(**TINY_T5, max_position_embeddings=0)


def test_weights_are_tied():
    model = make_model()
    shared = model.shared.weight
    assert model.lm_head.weight is shared
    assert model.encoder.embed_tokens.weight is shared
    assert model.decoder.embed_tokens.weight is shared
    assert model.get_encoder() is model.encoder and isinstance(model.encoder, T5PseudoEncoder)


# ------------------------------------------------------------------------------------------------
# Parity with transformers' T5
# ------------------------------------------------------------------------------------------------


def test_decoder_stack_matches_hf_t5stack_with_copied_weights(batch):
    ids, mask, labels = batch
    model = make_model()
    dec_config = copy.deepcopy(T5Config(**TINY_T5))
    dec_config.is_decoder = True
    dec_config._attn_implementation = "eager"
    reference = T5Stack(dec_config).eval()
    reference.load_state_dict(model.decoder.state_dict())

    enc = torch.randn(3, 7, TINY_T5["d_model"])
    dec_in = shift_right(labels)
    ours = model.decoder(input_ids=dec_in, encoder_hidden_states=enc, encoder_attention_mask=mask)
    ref = reference(input_ids=dec_in, encoder_hidden_states=enc, encoder_attention_mask=mask)
    torch.testing.assert_close(ours.last_hidden_state, ref.last_hidden_state)


def test_position_blind_matches_hf_t5_with_encoder_output_replaced(t5_dir, tiny_t5, batch):
    """Original behaviour: logits == HF T5 whose encoder output is LN(embed(x)) (closed form)."""
    ids, mask, _ = batch
    labels = torch.randint(2, TINY_T5["vocab_size"], (3, 5))
    labels[1, 3:] = -100
    model = T5PseudoDecForConditionalGeneration.from_pretrained(t5_dir, position_blind=True).eval()

    enc = rms_norm(tiny_t5.shared(ids), tiny_t5.encoder.final_layer_norm.weight)  # (B, S, D)
    ref = tiny_t5(encoder_outputs=(enc,), attention_mask=mask, labels=labels)
    ours = model(input_ids=ids, attention_mask=mask, labels=labels, causal_LM=False)
    torch.testing.assert_close(ours.logits, ref.logits)
    torch.testing.assert_close(ours.loss, ref.loss)  # no pad labels here: mean == HF's mean


def test_positioned_encoder_matches_closed_form(t5_dir, tiny_t5, batch):
    ids, mask, labels = batch
    model = T5PseudoDecForConditionalGeneration.from_pretrained(t5_dir, max_position_embeddings=16).eval()
    pos = model.encoder.embed_positions.weight[: ids.shape[1]]
    enc = rms_norm(tiny_t5.shared(ids) + pos[None], tiny_t5.encoder.final_layer_norm.weight)
    torch.testing.assert_close(model.encoder(input_ids=ids).last_hidden_state, enc)
    ref = tiny_t5(encoder_outputs=(enc,), attention_mask=mask, labels=labels)
    ours = model(input_ids=ids, attention_mask=mask, labels=labels, causal_LM=False)
    torch.testing.assert_close(ours.logits, ref.logits)


# ------------------------------------------------------------------------------------------------
# Causal-LM mode
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_causal_mode_future_tokens_never_change_earlier_logits(attn):
    model = make_model(attn=attn)
    torch.manual_seed(2)
    ids = torch.randint(2, TINY_T5["vocab_size"], (2, 8))
    base = model(input_ids=ids, labels=ids).logits  # auto-detected causal
    for k in (0, 3, 6):
        changed = ids.clone()
        changed[:, k] = (changed[:, k] + 7) % (TINY_T5["vocab_size"] - 2) + 2
        logits = model(input_ids=changed, labels=changed).logits
        # position t predicts token t from tokens < t: positions <= k cannot see token k
        torch.testing.assert_close(logits[:, : k + 1], base[:, : k + 1])
        assert not torch.allclose(logits[:, k + 1], base[:, k + 1])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_causal_mode_matches_hf_t5_with_hand_built_causal_cross_mask(t5_dir, tiny_t5, batch, attn):
    """Reference: HF T5 fed LN(embed(shift_right(x)) + pos) and a hand-made lower-triangular cross mask."""
    ids, mask, labels = batch
    model = T5PseudoDecForConditionalGeneration.from_pretrained(t5_dir, attn_implementation=attn).eval()
    assert model.decoder.config._attn_implementation == attn
    shifted = shift_right(ids)
    pos = model.encoder.embed_positions.weight[: ids.shape[1]]
    enc = rms_norm(tiny_t5.shared(shifted) + pos[None], tiny_t5.encoder.final_layer_norm.weight)
    n = ids.shape[1]
    shifted_pad = torch.cat([torch.ones(3, 1, dtype=torch.long), mask[:, :-1]], dim=1).bool()  # (B, S)
    cross = (
        torch.tril(torch.ones(n, n, dtype=torch.bool))[None, None] & shifted_pad[:, None, None]
    )  # (B,1,T,S)
    ref = tiny_t5(
        encoder_outputs=(enc,),
        attention_mask=cross,
        decoder_input_ids=shift_right(labels),
        decoder_attention_mask=shifted_pad.long(),
    )
    ours = model(input_ids=ids, attention_mask=mask, labels=labels)  # auto-detected causal
    keep = labels != -100  # positions whose logits matter (padding rows differ only in masked noise)
    torch.testing.assert_close(ours.logits[keep], ref.logits[keep])


def test_causal_mode_eager_and_sdpa_agree_on_padded_batch(batch):
    ids, mask, labels = batch
    eager = make_model(attn="eager")
    sdpa = make_model(attn="sdpa")
    assert eager.decoder.config._attn_implementation == "eager"
    assert sdpa.decoder.config._attn_implementation == "sdpa"
    out_e = eager(input_ids=ids, attention_mask=mask, labels=labels)
    out_s = sdpa(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out_e.logits, out_s.logits)
    torch.testing.assert_close(out_e.loss, out_s.loss)


def test_causal_mode_incremental_decoding_matches_full_forward():
    model = make_model()
    torch.manual_seed(4)
    ids = torch.randint(2, TINY_T5["vocab_size"], (2, 6))
    full = model(input_ids=ids, causal_LM=True).logits
    dec_in = shift_right(ids)
    past, steps = None, []
    for t in range(ids.shape[1]):
        out = model(
            input_ids=ids,
            decoder_input_ids=dec_in[:, t : t + 1],
            past_key_values=past,
            use_cache=True,
            causal_LM=True,
        )
        past = output_cache(out)  # the old name warns on transformers 5.24+
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


# ------------------------------------------------------------------------------------------------
# Mode auto-detection
# ------------------------------------------------------------------------------------------------


def test_auto_detection_stays_causal_on_padded_batch_with_ignored_labels(batch):
    ids, mask, labels = batch
    assert not torch.equal(labels, ids)  # the seed's whole-tensor comparison would say "non-causal"
    assert is_causal_lm_batch(ids, labels)
    model = make_model()
    auto = model(input_ids=ids, attention_mask=mask, labels=labels)
    causal = model(input_ids=ids, attention_mask=mask, labels=labels, causal_LM=True)
    seq2seq = model(input_ids=ids, attention_mask=mask, labels=labels, causal_LM=False)
    torch.testing.assert_close(auto.logits, causal.logits)
    assert not torch.allclose(auto.logits, seq2seq.logits)


def test_auto_detection_non_causal_cases_and_no_state_on_model(batch):
    ids, mask, labels = batch
    other = labels.clone()
    other[0, 0] = (other[0, 0] + 1) % TINY_T5["vocab_size"]
    assert not is_causal_lm_batch(ids, other)
    assert not is_causal_lm_batch(ids, labels[:, :4])
    assert not is_causal_lm_batch(ids, None)
    model = make_model()
    first = model(input_ids=ids, attention_mask=mask, labels=other).logits
    model(input_ids=ids, attention_mask=mask, labels=labels)  # a causal call in between
    again = model(input_ids=ids, attention_mask=mask, labels=other).logits
    torch.testing.assert_close(first, again)  # the mode does not leak between calls
    explicit = model(input_ids=ids, attention_mask=mask, labels=other, causal_LM=False).logits
    torch.testing.assert_close(first, explicit)
    assert not hasattr(model, "causal_LM")


def test_config_default_mode_overrides_auto_detection_but_not_generate():
    copy_batch = torch.tensor([[5, 6, 7, EOS]])  # a copy task: target == input
    seq2seq_model = make_model(causal_LM=False)
    auto_model = make_model()  # same seed and weights, auto-detect
    forced = seq2seq_model(input_ids=copy_batch, labels=copy_batch).logits
    explicit = auto_model(input_ids=copy_batch, labels=copy_batch, causal_LM=False).logits
    torch.testing.assert_close(forced, explicit)
    assert not torch.allclose(forced, auto_model(input_ids=copy_batch, labels=copy_batch).logits)

    causal_model = make_model(causal_LM=True)
    torch.testing.assert_close(
        causal_model(input_ids=copy_batch).logits,  # no labels: scores input_ids as an LM
        auto_model(input_ids=copy_batch, causal_LM=True).logits,
    )
    # generate() passes encoder_outputs: always non-causal, whatever the config default
    kwargs = dict(max_new_tokens=4, do_sample=False)
    assert torch.equal(causal_model.generate(copy_batch, **kwargs), auto_model.generate(copy_batch, **kwargs))


# ------------------------------------------------------------------------------------------------
# Input order (the position fix)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("position_blind", [False, True])
def test_permuting_inputs_changes_logits_unless_position_blind(position_blind):
    model = make_model(position_blind=position_blind)
    torch.manual_seed(5)
    ids = torch.randperm(TINY_T5["vocab_size"] - 2)[:6][None] + 2  # distinct tokens
    labels = torch.randint(2, TINY_T5["vocab_size"], (1, 4))
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    base = model(input_ids=ids, labels=labels, causal_LM=False).logits
    permuted = model(input_ids=ids[:, perm], labels=labels, causal_LM=False).logits
    if position_blind:
        torch.testing.assert_close(permuted, base)
    else:
        assert (permuted - base).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------
# Loss reductions
# ------------------------------------------------------------------------------------------------


def hand_token_losses(logits: torch.Tensor, labels: torch.Tensor) -> list[tuple[int, int, float]]:
    """-log softmax(logits)[label] for every position whose label is neither -100 nor the pad id."""
    out = []
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[b, t])
            if y in (-100, PAD):
                continue
            row = logits[b, t].double()
            out.append((b, t, float(torch.logsumexp(row, 0) - row[y])))
    return out


def test_reduce_loss_variants_match_hand_computed_token_weighted_ce():
    model = make_model()
    torch.manual_seed(6)
    ids = torch.randint(2, TINY_T5["vocab_size"], (2, 5))
    labels = torch.randint(2, TINY_T5["vocab_size"], (2, 4))
    labels[0, 3] = -100
    labels[1, 1:] = torch.tensor([PAD, -100, -100])  # a pad label never counts either
    outs = {
        r: model(input_ids=ids, labels=labels, reduce_loss=r, causal_LM=False)
        for r in (None, "mean", "sum", "none")
    }
    terms = hand_token_losses(outs["sum"].logits.detach(), labels)
    assert len(terms) == 4
    total = sum(v for _, _, v in terms)
    torch.testing.assert_close(outs["sum"].loss.double(), torch.tensor(total, dtype=torch.float64))
    torch.testing.assert_close(outs["mean"].loss.double(), torch.tensor(total / 4, dtype=torch.float64))
    torch.testing.assert_close(outs[None].loss, outs["mean"].loss)
    expected = torch.zeros(labels.shape, dtype=torch.float64)
    for b, t, v in terms:
        expected[b, t] = v
    assert outs["none"].loss.shape == labels.shape
    torch.testing.assert_close(outs["none"].loss.double(), expected)
    outs["mean"].loss.backward()
    assert model.encoder.embed_positions.weight.grad.abs().sum() > 0
    assert torch.isfinite(model.shared.weight.grad).all()
    # batching does not reweight: the mean is per token, not per sequence
    per_seq = outs["none"].loss.sum(1) / torch.tensor([3.0, 1.0])
    assert not torch.isclose(per_seq.mean(), outs["mean"].loss)


def test_default_loss_ignores_pad_labels_unlike_plain_cross_entropy():
    model = make_model()
    ids = torch.tensor([[5, 6, 7, EOS]])
    labels = torch.tensor([[8, 9, EOS, PAD]])
    out = model(input_ids=ids, labels=labels, causal_LM=False)
    ref = F.cross_entropy(out.logits[0, :3], labels[0, :3])
    torch.testing.assert_close(out.loss, ref)


def test_unknown_reduce_loss_is_a_clear_error():
    model = make_model()
    ids = torch.tensor([[5, 6, EOS]])
    with pytest.raises(ValueError, match=r"reduce_loss must be one of \(None, 'mean', 'sum', 'none'\)"):
        model(input_ids=ids, labels=ids, reduce_loss="avg")


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------


def test_cached_and_uncached_greedy_generate_agree_with_manual_loop(batch):
    ids, mask, _ = batch
    model = make_model()
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False)
    cached = model.generate(ids, use_cache=True, **kwargs)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
    # independent reference: argmax of full (non-causal) forwards without a cache, one token at a time
    dec = torch.full((ids.shape[0], 1), model.config.decoder_start_token_id)
    for _ in range(6):
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, causal_LM=False).logits
        dec = torch.cat([dec, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    for row, reference in zip(cached.tolist(), dec.tolist()):
        stop = reference.index(EOS) + 1 if EOS in reference else len(reference)
        assert row[:stop] == reference[:stop]
        assert all(tok == PAD for tok in row[stop:])  # generate pads finished rows


def test_beam_search_runs_and_returns_ranked_beams(batch):
    ids, mask, _ = batch
    model = make_model()
    out = model.generate(
        ids,
        attention_mask=mask,
        num_beams=3,
        num_return_sequences=2,
        max_new_tokens=5,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert out.sequences.shape[0] == ids.shape[0] * 2
    assert out.sequences.shape[1] <= 6
    scores = out.sequences_scores.view(ids.shape[0], 2)
    assert torch.all(scores[:, 0] >= scores[:, 1])
    uncached = model.generate(
        ids,
        attention_mask=mask,
        num_beams=3,
        num_return_sequences=2,
        max_new_tokens=5,
        do_sample=False,
        use_cache=False,
    )
    assert torch.equal(uncached, out.sequences)


# ------------------------------------------------------------------------------------------------
# Loading from T5, save/load round trip
# ------------------------------------------------------------------------------------------------


def _assert_copied_from_t5(model, t5):
    ref = t5.state_dict()
    torch.testing.assert_close(model.shared.weight, ref["shared.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.lm_head.weight, ref["shared.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        model.encoder.final_layer_norm.weight, ref["encoder.final_layer_norm.weight"], rtol=0, atol=0
    )
    for name, tensor in model.decoder.state_dict().items():
        torch.testing.assert_close(tensor, ref[f"decoder.{name}"], rtol=0, atol=0, msg=name)


def test_from_t5_directory_copies_decoder_and_reports_new_and_unused(t5_dir, tiny_t5):
    model = T5PseudoDecForConditionalGeneration.from_t5(t5_dir)
    _assert_copied_from_t5(model, tiny_t5)
    report = model.load_report
    assert report.new == ["encoder.embed_positions.weight"]
    assert "decoder.block.1.layer.1.EncDecAttention.q.weight" in report.used
    assert "encoder.final_layer_norm.weight" in report.used
    expected_unused = sorted(k for k in tiny_t5.state_dict() if k.startswith("encoder.block."))
    assert report.unused == expected_unused
    assert "1 new" in report.summary()

    blind = T5PseudoDecForConditionalGeneration.from_t5(t5_dir, position_blind=True)
    assert blind.load_report.new == [] and blind.encoder.embed_positions is None


def test_from_t5_in_memory_model_matches_directory_load(t5_dir, tiny_t5, batch):
    ids, mask, labels = batch
    from_memory = T5PseudoDecForConditionalGeneration.from_t5(
        tiny_t5, position_blind=True, attn_implementation="eager"
    )
    assert from_memory.decoder.config._attn_implementation == "eager"
    from_dir = T5PseudoDecForConditionalGeneration.from_t5(t5_dir, position_blind=True)
    _assert_copied_from_t5(from_memory, tiny_t5)
    assert from_memory.load_report.new == []
    assert from_memory.load_report.unused == from_dir.load_report.unused
    torch.testing.assert_close(
        from_memory(input_ids=ids, attention_mask=mask, labels=labels).logits,
        from_dir(input_ids=ids, attention_mask=mask, labels=labels).logits,
    )


def test_save_load_round_trip_through_auto_classes(tmp_path, batch):
    ids, mask, labels = batch
    model = make_model()
    model.save_pretrained(tmp_path / "pd")
    assert (tmp_path / "pd" / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path / "pd").model_type == "t5_pseudo_dec"
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "pd").eval()
    assert type(loaded) is T5PseudoDecForConditionalGeneration
    assert loaded.lm_head.weight is loaded.shared.weight
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    for causal in (True, False):
        a = model(input_ids=ids, attention_mask=mask, labels=labels, causal_LM=causal)
        b = loaded(input_ids=ids, attention_mask=mask, labels=labels, causal_LM=causal)
        torch.testing.assert_close(a.logits, b.logits)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def test_error_cases_are_clear(tmp_path):
    model = make_model()
    ids = torch.tensor([[5, 6, 7, EOS]])
    with pytest.raises(ValueError, match="max_position_embeddings=16; truncate"):
        model(input_ids=torch.full((1, 17), 5), labels=ids, causal_LM=False)
    with pytest.raises(ValueError, match="do not pass encoder_outputs"):
        model(encoder_outputs=model.encoder(input_ids=ids), input_ids=ids, labels=ids, causal_LM=True)
    with pytest.raises(ValueError, match="needs input_ids"):
        model(labels=ids, causal_LM=True)
    with pytest.raises(ValueError, match="labels shaped like input_ids"):
        model(input_ids=ids, labels=ids[:, :2], causal_LM=True)
    with pytest.raises(ValueError, match="pass labels or decoder_input_ids"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match="pass input_ids"):
        model(labels=ids, causal_LM=False)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model.encoder()
    with pytest.raises(ValueError, match="does not exist"):
        T5PseudoDecForConditionalGeneration.from_t5(tmp_path / "missing")
    with pytest.raises(ValueError, match="expects a T5 checkpoint directory or a T5 model"):
        T5PseudoDecForConditionalGeneration.from_t5(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"unknown config options \['positon_blind'\]"):
        T5PseudoDecForConditionalGeneration.from_t5(
            T5ForConditionalGeneration(T5Config(**TINY_T5)), positon_blind=True
        )


# --------------------------------------------------------------------------------------------------
# position_ids (packed rows, t5lab.train.packing)
# --------------------------------------------------------------------------------------------------


def test_position_ids_default_and_restart_per_segment():
    model = make_model()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    encoder = model.get_encoder()
    with torch.no_grad():
        default = encoder(input_ids=ids).last_hidden_state
        explicit = encoder(input_ids=ids, position_ids=torch.arange(6)[None]).last_hidden_state
        packed = encoder(input_ids=ids, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]])).last_hidden_state
        second_alone = encoder(input_ids=ids[:, 3:]).last_hidden_state
    torch.testing.assert_close(explicit, default)
    torch.testing.assert_close(packed[:, 3:], second_alone)  # the second segment embeds as if alone
    assert not torch.allclose(default[:, 3:], second_alone)  # (without the restart it would not)


def test_position_ids_reach_the_encoder_from_forward_and_blind_ignores_them():
    ids, labels = torch.tensor([[5, 6, 7, 1]]), torch.tensor([[7, 6, 5, 1]])
    model = make_model()
    with torch.no_grad():
        shifted = model(input_ids=ids, labels=labels, position_ids=torch.tensor([[3, 4, 5, 6]]), causal_LM=False)
        plain = model(input_ids=ids, labels=labels, causal_LM=False)
    assert not torch.allclose(shifted.logits, plain.logits)
    blind = make_model(position_blind=True)
    with torch.no_grad():
        torch.testing.assert_close(
            blind(input_ids=ids, labels=labels, position_ids=torch.tensor([[3, 4, 5, 6]]), causal_LM=False).logits,
            blind(input_ids=ids, labels=labels, causal_LM=False).logits,
        )
    with pytest.raises(ValueError, match="non-causal"):
        model(input_ids=ids, labels=ids, position_ids=torch.arange(4)[None], causal_LM=True)


# ------------------------------------------------------------------------------------------------
# What transformers' common tests pass (defects found by ModelTesterMixin / GenerationTesterMixin)
# ------------------------------------------------------------------------------------------------


def test_generate_returns_the_pseudo_encoders_attentions_and_hidden_states(batch):
    ids, mask, _ = batch
    model = make_model()
    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=3, do_sample=False, return_dict_in_generate=True,
        output_attentions=True, output_hidden_states=True,
    )
    assert out.encoder_attentions == ()  # the pseudo encoder has no attention
    (hidden,) = out.encoder_hidden_states  # "layers + 1" for a stack of zero layers
    torch.testing.assert_close(hidden, model.get_encoder()(input_ids=ids).last_hidden_state)
    assert len(out.decoder_attentions[0]) == TINY_T5["num_decoder_layers"]
    assert len(out.cross_attentions[0]) == TINY_T5["num_decoder_layers"]


def test_legacy_gradient_checkpointing_flag_builds_and_trains(batch):
    ids, mask, labels = batch
    torch.manual_seed(0)
    model = T5PseudoDecForConditionalGeneration(T5PseudoDecConfig(**TINY_T5, gradient_checkpointing=True)).train()
    assert model.decoder.gradient_checkpointing
    reference = copy.deepcopy(model)
    reference.decoder.gradient_checkpointing = False
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    reference(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize("causal", [True, False])
def test_inputs_embeds_and_decoder_inputs_embeds_equal_ids(batch, causal):
    ids, mask, labels = batch
    model = make_model()
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, labels=labels, causal_LM=causal)
        got = model(inputs_embeds=model.shared(ids), attention_mask=mask, labels=labels, causal_LM=causal)
        dec = model(
            input_ids=ids, attention_mask=mask, causal_LM=causal,
            decoder_inputs_embeds=model.shared(shift_right(labels)),
        )
    torch.testing.assert_close(got.logits, want.logits)
    torch.testing.assert_close(got.loss, want.loss)
    torch.testing.assert_close(dec.logits, want.logits)


def test_return_dict_false_and_the_cache_field(batch):
    from t5lab.models.t5core import CACHE_FIELD

    ids, mask, labels = batch
    model = make_model()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=True)
        as_tuple = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.loss)
    torch.testing.assert_close(as_tuple[1], out.logits)
    assert getattr(out, CACHE_FIELD).get_seq_length() == labels.shape[1]


def test_static_cache_generation_equals_dynamic(batch):
    ids, mask, _ = batch
    model = make_model()
    common = dict(attention_mask=mask, max_new_tokens=5, do_sample=False)
    assert torch.equal(model.generate(ids, cache_implementation="static", **common), model.generate(ids, **common))
