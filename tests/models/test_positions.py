"""Position encodings of the T5 core (docs/positions.md) against their papers' definitions.

References: hand-computed buckets (Raffel et al. 2020 / t5x) and transformers' own T5 buckets,
hand-computed sinusoids (Vaswani et al. 2017 sec. 3.5) and RoPE rotations (Su et al. 2021 eq. 34),
attention weights recomputed by hand from the projections; and, for decoder_only (causal and
prefix LM) and pseudo_dec with every encoding: perturbation (causality), cached == full forward,
left-padded batch == one row at a time, packed == unpacked, save/load, gradients.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
from transformers.models.t5.modeling_t5 import T5Attention as HFT5Attention

import t5lab  # noqa: F401  (registers the variants with the Auto classes)
from t5lab.models import masks, positions
from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM
from t5lab.models.enct5 import EncT5Config, EncT5ForSequenceClassification
from t5lab.models.pseudo_decoder import T5PseudoDecConfig, T5PseudoDecForConditionalGeneration
from t5lab.models.t5core import CACHE_FIELD, T5Attention

TOL = dict(atol=1e-5, rtol=1e-5)
ENCODINGS = list(positions.POSITION_ENCODINGS)
VOCAB = 40
TINY = dict(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2, dropout_rate=0.0,
            relative_attention_num_buckets=8, relative_attention_max_distance=16,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, max_position_embeddings=32)
MODELS = ["decoder_only", "prefix_lm", "pseudo_dec"]


def build(kind: str, encoding: str, seed: int = 0, attn: str | None = None, **overrides):
    torch.manual_seed(seed)
    values = {**TINY, "position_encoding": encoding, **overrides}
    if kind == "pseudo_dec":
        values.setdefault("causal_LM", False)
        config, cls = T5PseudoDecConfig(**values), T5PseudoDecForConditionalGeneration
    else:
        config, cls = T5DecoderOnlyConfig(**values, prefix_lm=kind == "prefix_lm"), T5DecoderOnlyForCausalLM
    if attn is not None:
        config._attn_implementation = attn
    return cls(config).eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(2, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits_of(model, kind: str, ids, mask=None, prefix=None, **kwargs):
    """Logits over ``ids``: decoder_only as an LM (prefix LM: ``prefix`` first positions), pseudo_dec
    in causal-LM mode (its decoder then runs over the same positions)."""
    if kind == "pseudo_dec":
        return model(input_ids=ids, attention_mask=mask, labels=ids, causal_LM=True, **kwargs).logits
    prefix_mask = None
    if kind == "prefix_lm":
        prefix_mask = torch.zeros_like(ids)
        prefix_mask[:, :prefix] = 1
        if mask is not None:
            prefix_mask = prefix_mask * mask
    return model(input_ids=ids, attention_mask=mask, prefix_mask=prefix_mask, **kwargs).logits


# ---------------------------------------------------------------------------------------------
# relative buckets: hand-computed (Raffel et al. 2020; t5x `_relative_position_bucket`)
# ---------------------------------------------------------------------------------------------


def bucket(rp: int, **kwargs) -> int:
    return int(masks.t5_relative_position_bucket(torch.tensor(rp), **kwargs))


def test_t5_buckets_hand_computed_both_directions():
    # 32 buckets, 16 per direction, 8 exact; log range 8 .. 128 over 8 buckets
    kw = dict(bidirectional=True, num_buckets=32, max_distance=128)
    assert [bucket(rp, **kw) for rp in (0, -1, -7, 1, 7)] == [0, 1, 7, 17, 23]
    assert bucket(-8, **kw) == 8  # first log bucket: log(8/8) = 0
    assert bucket(-16, **kw) == 8 + int(math.log(2) / math.log(16) * 8)  # = 10
    assert bucket(20, **kw) == 16 + 8 + int(math.log(20 / 8) / math.log(16) * 8)  # = 26
    assert bucket(-128, **kw) == bucket(-1000, **kw) == 15  # the last bucket of the past
    assert bucket(1000, **kw) == 31


def test_t5_buckets_hand_computed_one_way():
    kw = dict(bidirectional=False, num_buckets=32, max_distance=128)  # 16 exact, log 16 .. 128
    assert bucket(5, **kw) == 0  # the future shares distance 0's bucket (T5 decoder)
    assert [bucket(rp, **kw) for rp in (0, -1, -15)] == [0, 1, 15]
    assert bucket(-16, **kw) == 16
    assert bucket(-32, **kw) == 16 + int(math.log(2) / math.log(8) * 16)  # = 21
    assert bucket(-200, **kw) == 31


def test_max_exact_makes_every_offset_exact():
    # one-way, 65 buckets all exact: distances 0..64 each have their own bucket
    kw = dict(bidirectional=False, num_buckets=65, max_distance=128, max_exact=65)
    distances = torch.arange(0, -80, -1)
    got = masks.t5_relative_position_bucket(distances, **kw)
    assert got[:65].tolist() == list(range(65)) and set(got[64:].tolist()) == {64}
    # bidirectional: 130 buckets, 65 exact per direction
    kw = dict(bidirectional=True, num_buckets=130, max_distance=128, max_exact=65)
    assert [bucket(rp, **kw) for rp in (-64, 64, 1, -65)] == [64, 129, 66, 64]


def test_max_exact_below_the_bucket_count_keeps_a_log_range():
    kw = dict(bidirectional=False, num_buckets=12, max_distance=32, max_exact=8)  # log 8 .. 32 over 4
    assert [bucket(rp, **kw) for rp in (-7, -8)] == [7, 8]
    assert bucket(-16, **kw) == 8 + int(math.log(2) / math.log(4) * 4)  # = 10
    assert bucket(-31, **kw) == 8 + int(math.log(31 / 8) / math.log(4) * 4)  # = 11
    assert bucket(-500, **kw) == 11


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 16), (12, 20)])
def test_default_buckets_equal_transformers_t5(bidirectional, num_buckets, max_distance):
    rp = torch.arange(-300, 301)
    ours = masks.t5_relative_position_bucket(rp, bidirectional, num_buckets, max_distance)
    theirs = HFT5Attention._relative_position_bucket(rp, bidirectional, num_buckets, max_distance)
    assert torch.equal(ours, theirs)
    per_direction = num_buckets // 2 if bidirectional else num_buckets
    explicit = masks.t5_relative_position_bucket(rp, bidirectional, num_buckets, max_distance, per_direction // 2)
    assert torch.equal(explicit, ours)


def test_attention_bias_uses_max_exact_from_the_config():
    config = T5DecoderOnlyConfig(**{**TINY, "relative_attention_num_buckets": 12, "relative_attention_max_exact": 12})
    attention = T5Attention(config, has_relative_attention_bias=True, is_decoder=True)
    bias = attention.compute_bias(12, 12)  # (1, H, Q, K)
    table = attention.relative_attention_bias.weight  # (buckets, H)
    for q, k in [(11, 0), (11, 1), (5, 3), (3, 5)]:
        want = table[max(q - k, 0)]  # every backward distance < 12 is its own bucket, the future is 0
        torch.testing.assert_close(bias[0, :, q, k], want)


def test_prefix_forward_table_honours_max_exact():
    config = T5DecoderOnlyConfig(**{**TINY, "relative_attention_num_buckets": 10, "relative_attention_max_exact": 10})
    model = T5DecoderOnlyForCausalLM(config)
    attention = model.decoder.block[0].layer[0].SelfAttention
    bias = attention.compute_bias(12, 12)
    forward_table = attention.prefix_forward_bias.weight
    for d in range(1, 11):  # forward distance d -> row d - 1, exact up to the table size
        torch.testing.assert_close(bias[0, :, 0, d], forward_table[min(d - 1, 9)])


# ---------------------------------------------------------------------------------------------
# sinusoidal (Vaswani et al. 2017 sec. 3.5) and rotary (Su et al. 2021) by hand
# ---------------------------------------------------------------------------------------------


def test_sinusoidal_table_hand_computed():
    table = positions.sinusoidal_embeddings(torch.tensor([0, 1, 5]), dim=4)  # 10000^(2/4) = 100
    want = torch.tensor([
        [0.0, 1.0, 0.0, 1.0],
        [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
        [math.sin(5), math.cos(5), math.sin(0.05), math.cos(0.05)],
    ])
    torch.testing.assert_close(table, want)
    odd = positions.sinusoidal_embeddings(torch.tensor([3]), dim=5)  # d=5: i = 0, 1, 2; last cos dropped
    torch.testing.assert_close(odd[0, 4], torch.tensor(math.sin(3 / 10000 ** (4 / 5))))


def test_rotary_is_the_papers_2x2_rotation():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4)  # (B, H, T, d)
    cos, sin = positions.rotary_angles(torch.tensor([[2]]), dim=4, base=100.0)  # theta = 1, 100^(-1/2)
    got = positions.apply_rotary(x, cos, sin).flatten()

    def rotate(pair, angle):
        matrix = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        return matrix @ torch.tensor(pair)

    want = torch.cat([rotate([1.0, 2.0], 2 * 1.0), rotate([3.0, 4.0], 2 * 0.1)])
    torch.testing.assert_close(got, want)


def test_rotary_scores_depend_only_on_the_offset():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)

    def score(m, n):
        qm = positions.apply_rotary(q, *positions.rotary_angles(torch.tensor([[m]]), 8))
        kn = positions.apply_rotary(k, *positions.rotary_angles(torch.tensor([[n]]), 8))
        return (qm * kn).sum()

    torch.testing.assert_close(score(5, 2), score(13, 10))
    torch.testing.assert_close(score(0, 7), score(30, 37))
    # q_m . k_n = q . R_(n-m) k (RoFormer eq. 16)
    torch.testing.assert_close(score(9, 4), (q * positions.apply_rotary(k, *positions.rotary_angles(torch.tensor([[-5]]), 8))).sum())
    assert not torch.allclose(score(5, 2), score(5, 3))  # the offset does matter


def test_position_ids_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert positions.position_ids_from_mask(mask, 5).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]
    assert positions.position_ids_from_mask(mask, 2, past=3).tolist() == [[1, 2], [3, 3]]
    assert positions.position_ids_from_mask(None, 2, past=3).tolist() == [[3, 4]]


# ---------------------------------------------------------------------------------------------
# each encoding inside the stack
# ---------------------------------------------------------------------------------------------


def test_rotary_attention_weights_equal_a_hand_computation():
    model = build("decoder_only", "rotary", attn="eager", num_layers=1)
    ids = tokens(2, 5)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # left padding: positions from the mask
    weights = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[0]  # (B, H, T, T)
    attention = model.decoder.block[0].layer[0].SelfAttention
    with torch.no_grad():
        h = model.decoder.block[0].layer[0].layer_norm(model.shared(ids))
        split = lambda t: t.view(2, 5, 2, 4).transpose(1, 2)  # noqa: E731  (B, H, T, d)
        q, k = split(attention.q(h)), split(attention.k(h))
    pos = [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    want = torch.empty_like(weights)
    for b in range(2):
        for head in range(2):
            for i in range(5):
                scores = []
                for j in range(5):
                    # rotate each pair (2t, 2t+1) of q by pos[i] * theta_t and of k by pos[j] * theta_t
                    qi, kj = q[b, head, i].clone(), k[b, head, j].clone()
                    for t in range(2):
                        theta = 10000 ** (-2 * t / 4)
                        for vec, p in ((qi, pos[b][i]), (kj, pos[b][j])):
                            a, c = float(vec[2 * t]), float(vec[2 * t + 1])
                            angle = p * theta
                            vec[2 * t] = a * math.cos(angle) - c * math.sin(angle)
                            vec[2 * t + 1] = a * math.sin(angle) + c * math.cos(angle)
                    visible = j <= i and mask[b, j] == 1
                    scores.append(float(qi @ kj) if visible else -math.inf)  # T5: no 1/sqrt(d)
                want[b, head, i] = torch.softmax(torch.tensor(scores), -1)
    rows = mask.bool()  # padding query rows are never read
    torch.testing.assert_close(weights.transpose(1, 2)[rows], want.transpose(1, 2)[rows], **TOL)


@pytest.mark.parametrize("encoding", ["absolute", "sinusoidal", "none", "relative"])
def test_stack_input_is_token_plus_position_embedding(encoding):
    model = build("decoder_only", encoding)
    ids = tokens(2, 5)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    first = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[0]  # (B, T, D)
    pos = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
    want = model.shared(ids)
    if encoding == "absolute":
        want = want + model.decoder.embed_positions.weight[pos]
    elif encoding == "sinusoidal":
        want = want + positions.sinusoidal_embeddings(pos, 16)
    torch.testing.assert_close(first, want)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_parameters_of_each_encoding(encoding):
    names = set(build("decoder_only", encoding).state_dict())
    pseudo = set(build("pseudo_dec", encoding).state_dict())
    relative = {n for n in names | pseudo if "relative_attention_bias" in n or "prefix_forward_bias" in n}
    learned = {n for n in names | pseudo if n.startswith("decoder.embed_positions")}
    assert bool(relative) == (encoding == "relative")
    assert bool(learned) == (encoding == "absolute")
    if encoding == "absolute":
        assert build("decoder_only", encoding).decoder.embed_positions.weight.shape == (32, 16)
    if encoding in ("sinusoidal", "rotary", "none"):  # nothing learned, nothing saved
        assert names == set(build("decoder_only", "none").state_dict())


def test_cross_attention_carries_no_rotation():
    config = T5PseudoDecConfig(**TINY, position_encoding="rotary")
    attention = T5Attention(config).eval()
    g = torch.Generator().manual_seed(0)
    h, states = torch.randn(1, 3, 16, generator=g), torch.randn(1, 6, 16, generator=g)
    rotary = positions.rotary_angles(torch.tensor([[4, 5, 6]]), 4)
    plain = attention(h, key_value_states=states)[0]
    torch.testing.assert_close(attention(h, key_value_states=states, rotary=rotary)[0], plain)
    assert not torch.allclose(attention(h, rotary=rotary)[0], attention(h)[0])  # self-attention does rotate


def test_nope_encoder_is_permutation_equivariant():
    torch.manual_seed(0)
    model = EncT5ForSequenceClassification(EncT5Config(**TINY, num_labels=3, position_encoding="none")).eval()
    ids = tokens(1, 6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = model.encoder(input_ids=ids).last_hidden_state
    torch.testing.assert_close(model.encoder(input_ids=ids[:, perm]).last_hidden_state, out[:, perm], **TOL)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_enct5_runs_and_orders_its_input(encoding):
    torch.manual_seed(0)
    model = EncT5ForSequenceClassification(EncT5Config(**TINY, num_labels=3, position_encoding=encoding)).eval()
    ids = tokens(2, 6)
    logits = model(input_ids=ids).logits
    swapped = model(input_ids=ids[:, [1, 0, 2, 3, 4, 5]]).logits
    # a bag of tokens cannot tell a swap; every encoding with positions can
    assert torch.allclose(logits, swapped, atol=1e-5) == (encoding == "none")


def test_absolute_positions_beyond_the_table_are_an_error():
    model = build("decoder_only", "absolute")
    with pytest.raises(ValueError, match="max_position_embeddings=32"):
        model(input_ids=tokens(1, 33))


# ---------------------------------------------------------------------------------------------
# config: validation, the harness, save / load
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_class", [T5DecoderOnlyConfig, T5PseudoDecConfig, EncT5Config])
@pytest.mark.parametrize("overrides, match", [
    ({"position_encoding": "alibi"}, "position_encoding='alibi' is unknown"),
    ({"relative_attention_max_exact": 0}, "relative_attention_max_exact=0"),
    ({"relative_attention_max_exact": 9}, "relative_attention_max_exact=9"),
    ({"relative_attention_max_exact": 3, "relative_attention_max_distance": 3}, "must exceed"),
    ({"position_encoding": "rotary", "d_kv": 5}, "d_kv must be even"),
    ({"position_encoding": "rotary", "rotary_base": 1}, "rotary_base"),
    ({"position_encoding": "absolute", "max_position_embeddings": 0}, "max_position_embeddings=0"),
])
def test_config_rejects_bad_position_settings_in_one_line(config_class, overrides, match):
    extra = {"num_labels": 3} if config_class is EncT5Config else {}
    with pytest.raises(ValueError, match=match) as info:
        config_class(**{**TINY, **overrides, **extra})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("config_class", [T5DecoderOnlyConfig, T5PseudoDecConfig, EncT5Config])
@pytest.mark.parametrize("overrides", [
    {"rotary_base": "abc"}, {"relative_attention_max_exact": "4"}, {"max_position_embeddings": "64"},
    {"position_encoding": 3},
])
def test_config_rejects_wrong_position_types(config_class, overrides):
    """Wrong types stop at the configs' @strict field checks (the harness turns them into one line:
    tests/models/test_strict_types.py)."""
    from huggingface_hub.errors import StrictDataclassFieldValidationError

    extra = {"num_labels": 3} if config_class is EncT5Config else {}
    [(field, _)] = overrides.items()
    with pytest.raises(StrictDataclassFieldValidationError, match=field):
        config_class(**{**TINY, **overrides, **extra})


def test_enct5_max_exact_fits_the_bidirectional_half():
    EncT5Config(**TINY, num_labels=3, relative_attention_max_exact=4)
    with pytest.raises(ValueError, match="halved for the bidirectional encoder"):
        EncT5Config(**TINY, num_labels=3, relative_attention_max_exact=5)


def test_harness_options_are_checked():
    from t5lab.errors import ConfigError
    from t5lab.variants import get_variant

    for name in ("decoder_only", "pseudo_dec", "enct5"):
        get_variant(name).check_options({"position_encoding": "rotary", "rotary_base": 500.0,
                                         "relative_attention_max_exact": 4, "max_position_embeddings": 64})
    for name in ("t5", "gpt2"):
        with pytest.raises(ConfigError, match="model.options.position_encoding: not an option"):
            get_variant(name).check_options({"position_encoding": "rotary"})


@pytest.mark.slow
def test_train_with_an_unknown_encoding_is_a_one_line_config_error(tmp_path, monkeypatch):
    from t5lab.errors import ConfigError
    from t5lab.train import train

    monkeypatch.chdir(tmp_path)
    tiny = {
        "name": "pos", "model": {"variant": "decoder_only", "d_model": 16, "d_ff": 32, "d_kv": 4, "num_heads": 2,
                                 "num_layers": 1, "options": {"position_encoding": "alibi"}},
        "data": {"task": "copy", "options": {"min_len": 2, "max_len": 4, "alphabet": "abcd"},
                 "train": 16, "val": 4, "test": 4, "max_length": 8},
        "train": {"batch_size": 4, "max_steps": 1, "progress_bar": False, "num_samples": 1},
        "trainer": {"num_threads": 1},
    }
    with pytest.raises(ConfigError, match="position_encoding='alibi' is unknown") as info:
        train(tiny, out="runs")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", ["decoder_only", "pseudo_dec"])
def test_save_load_round_trip(kind, encoding, tmp_path):
    model = build(kind, encoding, rotary_base=500.0, relative_attention_max_exact=3)
    model.save_pretrained(tmp_path)
    auto = AutoModelForSeq2SeqLM if kind == "pseudo_dec" else AutoModelForCausalLM
    loaded = auto.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert (loaded.config.position_encoding, loaded.config.rotary_base, loaded.config.relative_attention_max_exact) == (
        encoding, 500.0, 3)
    ids = tokens(2, 6)
    torch.testing.assert_close(logits_of(loaded, kind, ids), logits_of(model, kind, ids), **TOL)


# ---------------------------------------------------------------------------------------------
# behaviour of every encoding in the models
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", MODELS)
def test_future_tokens_do_not_change_the_past(kind, encoding):
    model = build(kind, encoding)
    ids = tokens(2, 8)
    t, prefix = 5, 3
    changed = ids.clone()
    changed[:, t:] = tokens(2, 3, seed=7)
    with torch.no_grad():
        before = logits_of(model, kind, ids, prefix=prefix)
        after = logits_of(model, kind, changed, prefix=prefix)
    # decoder_only: logits[t] reads token t; pseudo_dec (causal LM): logits[t] reads tokens < t
    seen = t if kind != "pseudo_dec" else t + 1
    torch.testing.assert_close(after[:, :seen], before[:, :seen], **TOL)
    assert not torch.allclose(after[:, seen], before[:, seen], atol=1e-4)  # the test can fail


def test_prefix_positions_see_each_other():
    for encoding in ENCODINGS:
        model = build("prefix_lm", encoding)
        ids = tokens(1, 8)
        changed = ids.clone()
        changed[:, 2] = (ids[:, 2] + 1) % VOCAB
        with torch.no_grad():
            assert not torch.allclose(logits_of(model, "prefix_lm", ids, prefix=4)[:, 0],
                                      logits_of(model, "prefix_lm", changed, prefix=4)[:, 0], atol=1e-4)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", ["decoder_only", "prefix_lm"])
def test_decoder_only_cached_steps_equal_full_forward(kind, encoding):
    model = build(kind, encoding)
    ids = tokens(2, 8)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded row: the cache offset and the mask must both count
    prefix = torch.zeros_like(ids)
    prefix[:, :4] = 1 if kind == "prefix_lm" else 0
    prefix = prefix * mask
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, prefix_mask=prefix if kind == "prefix_lm" else None).logits
        out = model(input_ids=ids[:, :4], attention_mask=mask[:, :4],
                    prefix_mask=prefix[:, :4] if kind == "prefix_lm" else None, use_cache=True)
        steps = [out.logits]
        cache = getattr(out, CACHE_FIELD)
        for t in range(4, 8):
            out = model(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache, use_cache=True,
                        prefix_mask=prefix[:, :t + 1] if kind == "prefix_lm" else None)
            cache = getattr(out, CACHE_FIELD)
            steps.append(out.logits)
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[real], full[real], **TOL)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_pseudo_dec_cached_steps_equal_full_forward(encoding):
    model = build("pseudo_dec", encoding)
    ids, labels = tokens(2, 6), tokens(2, 5, seed=3)
    decoder_ids = model._shift_right(labels)
    with torch.no_grad():
        full = model(input_ids=ids, decoder_input_ids=decoder_ids).logits
        encoder_outputs = model.get_encoder()(input_ids=ids)
        cache, steps = None, []
        for t in range(5):
            out = model(encoder_outputs=encoder_outputs, decoder_input_ids=decoder_ids[:, t:t + 1], cache=cache,
                        use_cache=True)
            cache = getattr(out, CACHE_FIELD)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, **TOL)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", MODELS)
def test_generate_cached_equals_uncached(kind, encoding):
    model = build(kind, encoding)
    prompt = tokens(2, 4)
    mask = torch.ones_like(prompt)
    if kind != "pseudo_dec":
        mask[0, 0] = 0  # left padding
    args = dict(input_ids=prompt, attention_mask=mask, max_new_tokens=6, do_sample=False, return_dict_in_generate=True,
                output_scores=True, pad_token_id=0, eos_token_id=None)
    cached = model.generate(**args, use_cache=True)
    uncached = model.generate(**args, use_cache=False)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(cached.scores), torch.stack(uncached.scores), **TOL)


@pytest.mark.parametrize("encoding", ["absolute", "rotary"])
def test_decoder_only_static_cache_equals_dynamic(encoding):
    model = build("decoder_only", encoding)
    prompt = tokens(2, 4)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    args = dict(input_ids=prompt, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0,
                eos_token_id=None)
    assert torch.equal(model.generate(**args, cache_implementation="static"), model.generate(**args))


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", ["decoder_only", "prefix_lm"])
def test_decoder_only_left_padded_batch_equals_one_by_one(kind, encoding):
    model = build(kind, encoding)
    rows = [tokens(1, 7, seed=4), tokens(1, 4, seed=5)]
    ids = torch.zeros(2, 7, dtype=torch.long)
    mask = torch.zeros(2, 7, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, 7 - row.shape[1]:] = row
        mask[r, 7 - row.shape[1]:] = 1
    prefix = torch.zeros_like(ids)
    for r, row in enumerate(rows):  # the first 2 real tokens of each row
        prefix[r, 7 - row.shape[1]:9 - row.shape[1]] = 1
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, prefix_mask=prefix if kind == "prefix_lm" else None).logits
        for r, row in enumerate(rows):
            alone = logits_of(model, kind, row, prefix=2)
            torch.testing.assert_close(batch[r, 7 - row.shape[1]:], alone[0], **TOL)
    generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False,
                               pad_token_id=0, eos_token_id=None)
    for r, row in enumerate(rows):
        alone = model.generate(input_ids=row, max_new_tokens=4, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert torch.equal(generated[r, 7:], alone[0, row.shape[1]:])


@pytest.mark.parametrize("encoding", ["absolute", "sinusoidal", "rotary", "none"])
def test_pseudo_dec_causal_left_padded_batch_equals_one_by_one(encoding):
    # position_blind: the pseudo encoder's own table counts positions from the row start, padding
    # included (its behaviour, not the decoder's). "relative" is left out: the decoder's start token
    # sits before the padding, so its distance to the real tokens grows with the padding.
    model = build("pseudo_dec", encoding, position_blind=True)
    rows = [tokens(1, 6, seed=4), tokens(1, 3, seed=5)]
    ids = torch.zeros(2, 6, dtype=torch.long)
    mask = torch.zeros(2, 6, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, 6 - row.shape[1]:] = row
        mask[r, 6 - row.shape[1]:] = 1
    with torch.no_grad():
        batch = logits_of(model, "pseudo_dec", ids, mask)
        for r, row in enumerate(rows):
            alone = logits_of(model, "pseudo_dec", row)[0]
            pad = 6 - row.shape[1]
            # position 0 (the start token) predicts the first token; then the real positions
            torch.testing.assert_close(batch[r, 0], alone[0], **TOL)
            torch.testing.assert_close(batch[r, pad + 1:], alone[1:], **TOL)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_pseudo_dec_padded_generate_equals_one_by_one(encoding):
    model = build("pseudo_dec", encoding)
    rows = [tokens(1, 6, seed=4), tokens(1, 3, seed=5)]
    ids = torch.zeros(2, 6, dtype=torch.long)
    mask = torch.zeros(2, 6, dtype=torch.long)
    for r, row in enumerate(rows):  # seq2seq inputs are right-padded
        ids[r, :row.shape[1]] = row
        mask[r, :row.shape[1]] = 1
    generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, eos_token_id=None)
    for r, row in enumerate(rows):
        assert torch.equal(generated[r], model.generate(input_ids=row, max_new_tokens=5, eos_token_id=None)[0])


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", MODELS)
def test_gradients_reach_the_position_parameters(kind, encoding):
    model = build(kind, encoding).train()
    ids = tokens(2, 6)
    if kind == "pseudo_dec":
        loss = model(input_ids=ids, labels=tokens(2, 4, seed=2)).loss
    else:
        prefix = torch.zeros_like(ids)
        prefix[:, :3] = 1 if kind == "prefix_lm" else 0
        loss = model(input_ids=ids, labels=ids, prefix_mask=prefix if kind == "prefix_lm" else None).loss
    loss.backward()
    for name, param in model.named_parameters():
        if "prefix_forward_bias" in name and kind != "prefix_lm":
            continue  # only prefix queries read the forward table
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        if any(key in name for key in ("embed_positions", "relative_attention_bias", "SelfAttention.q", "SelfAttention.k")):
            assert param.grad.abs().sum() > 0, name


# ---------------------------------------------------------------------------------------------
# packing: positions restart in each segment
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", ["decoder_only", "prefix_lm"])
def test_decoder_only_packed_row_equals_segments_alone(kind, encoding):
    model = build(kind, encoding)
    first, second = tokens(1, 5, seed=4), tokens(1, 3, seed=5)
    ids = torch.cat([first, second, torch.zeros(1, 1, dtype=torch.long)], 1)  # (1, 9), one pad
    segments = torch.tensor([[1] * 5 + [2] * 3 + [0]])
    prefix = torch.tensor([[1, 1, 0, 0, 0, 1, 1, 0, 0]]) if kind == "prefix_lm" else None
    with torch.no_grad():
        packed = model(input_ids=ids, segment_ids=segments, prefix_mask=prefix).logits
        torch.testing.assert_close(packed[:, :5], logits_of(model, kind, first, prefix=2), **TOL)
        torch.testing.assert_close(packed[:, 5:8], logits_of(model, kind, second, prefix=2), **TOL)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_pseudo_dec_packed_batch_equals_unpacked(encoding):
    from t5lab.formulation import Formulation
    from t5lab.tasks import Pair
    from t5lab.tokenizers import build_tokenizer
    from t5lab.train.packing import first_fit_decreasing, packed_forward

    tok = build_tokenizer("char", alphabet="abcdefgh")
    rng = random.Random(0)
    word = lambda lo, hi: "".join(rng.choice("abcdefgh") for _ in range(rng.randint(lo, hi)))  # noqa: E731
    pairs = [Pair(word(7, 8), word(7, 8))] + [Pair(word(1, 3), word(1, 3)) for _ in range(5)]
    form = Formulation("seq2seq", tok, max_length=12)
    examples = form.encode_all(pairs)
    plain, packed = form.collate(examples), form.collate_packed(examples, None)
    assert int(packed["decoder_segment_ids"].amax(1).max()) >= 2  # really packed
    model = build("pseudo_dec", encoding, vocab_size=len(tok))
    with torch.no_grad():
        want = model(**plain).logits  # (B, Lt, V)
        got = packed_forward(model, packed).logits  # (R, Lt', V)
    # the rows collate_packed builds (its public planner): example i is segment s of row r
    sides = [[e.input_ids for e in examples], [e.labels for e in examples]]
    caps = [max(len(x) for x in side) for side in sides]
    rows = first_fit_decreasing([(len(e.input_ids), len(e.labels)) for e in examples], caps)
    assert sum(len(row) for row in rows) == len(examples)
    for r, row in enumerate(rows):
        for s, i in enumerate(row, start=1):
            where = packed["decoder_segment_ids"][r] == s
            assert torch.equal(packed["labels"][r, where], plain["labels"][i, : int(where.sum())])
            torch.testing.assert_close(got[r, where], want[i, : int(where.sum())], **TOL)
