"""Sequence packing: packed batches are the unpacked batch in another layout.

References: the unpacked batch of the same examples (per-example losses, the batch loss and every
parameter gradient, fp32, assert_close at ~1e-5), perturbation (no cross-contamination), eager vs
sdpa, and closed-form properties of the layout (every example exactly once, hypothesis).
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from t5lab.errors import ConfigError
from t5lab.formulation import IGNORE, Formulation, lm_logits_labels, token_loss
from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM
from t5lab.models.masks import segment_mask, segment_positions
from t5lab.models.pseudo_decoder import T5PseudoDecConfig, T5PseudoDecForConditionalGeneration
from t5lab.tasks import Pair
from t5lab.tokenizers import build_tokenizer
from t5lab.train.packing import (
    first_fit_decreasing,
    num_examples,
    packed_forward,
    resolve_packing,
    row_count,
    shift_right_per_segment,
)

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer("char", alphabet="abcdefgh")


def records(n: int = 10, seed: int = 0) -> list[Pair]:
    """Two long pairs set the row length; the short ones pack several to a row."""
    rng = random.Random(seed)
    word = lambda lo, hi: "".join(rng.choice("abcdefgh") for _ in range(rng.randint(lo, hi)))  # noqa: E731
    return [Pair(word(8, 10), word(8, 10)) for _ in range(2)] + [Pair(word(1, 4), word(1, 4)) for _ in range(n - 2)]


T5_SIZES = dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0,
                # few buckets and a short max distance: the packed rows span several log buckets
                relative_attention_num_buckets=8, relative_attention_max_distance=16,
                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def build(variant: str, vocab: int, attn: str = "eager") -> torch.nn.Module:
    torch.manual_seed(0)
    if variant == "t5":
        cls, config = T5ForConditionalGeneration, T5Config(vocab_size=vocab, **T5_SIZES)
    elif variant in ("pseudo_dec", "pseudo_dec_blind"):
        cls = T5PseudoDecForConditionalGeneration
        config = T5PseudoDecConfig(vocab_size=vocab, position_blind=variant.endswith("blind"), causal_LM=False,
                                   max_position_embeddings=64, **T5_SIZES)
    elif variant in ("decoder_only", "decoder_only_prefix"):
        cls = T5DecoderOnlyForCausalLM
        config = T5DecoderOnlyConfig(vocab_size=vocab, prefix_lm=variant.endswith("prefix"), **T5_SIZES)
    else:
        cls = GPT2LMHeadModel
        config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    # set before building: the T5 stacks keep copies of the config
    config._attn_implementation = attn  # both back-ends read the same 4D additive mask
    model = cls(config)
    assert all(m.config._attn_implementation == attn for m in model.modules() if hasattr(m, "config"))
    return model.train()


KIND = {"t5": "seq2seq", "pseudo_dec": "seq2seq", "pseudo_dec_blind": "seq2seq", "decoder_only": "causal_lm",
        "decoder_only_prefix": "prefix_lm", "gpt2": "causal_lm"}
VARIANTS = list(KIND)


def setup(tok, variant: str, n: int = 10, pack_length: int | None = None, loss_on: str = "target"):
    kind = KIND[variant]
    form = Formulation(kind, tok, max_length=12, loss_on=loss_on)
    examples = form.encode_all(records(n))
    packed = form.collate_packed(examples, pack_length)
    assert int(packed["segment_ids"].amax(1).max()) >= 3  # the test batches really pack
    return form, examples, form.collate(examples), packed


def forward(model, batch):
    return packed_forward(model, batch) if "segment_ids" in batch else model(**batch)


def loss_and_grads(model, kind, batch):
    model.zero_grad(set_to_none=True)
    loss_sum, n, _ = token_loss(kind, forward(model, batch).logits, batch["labels"])
    loss = loss_sum / n
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def per_token(kind, logits, labels):
    """Per-token losses (B, T') aligned with the labels they score, and those labels."""
    logits, labels = lm_logits_labels(kind, logits, labels)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    return ce, labels


def plan(form, examples, pack_length=None):
    """The rows collate_packed uses (recomputed from the public planner)."""
    sides = [[e.input_ids for e in examples]] + ([[e.labels for e in examples]] if form.kind == "seq2seq" else [])
    cap = [pack_length or max(len(s) for s in side) for side in sides]
    return first_fit_decreasing([tuple(len(side[i]) for side in sides) for i in range(len(examples))], cap)


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------


def test_first_fit_decreasing_closed_form():
    # capacity 10: 7 | 6 | 5 5? no: 7+3, 6+4, 5+5  (three full rows, as FFD places them)
    assert first_fit_decreasing([3, 7, 5, 6, 4, 5], 10) == [[1, 0], [3, 4], [2, 5]]
    # two dimensions must both fit
    assert first_fit_decreasing([(5, 1), (1, 5), (5, 5)], (6, 6)) == [[2], [0, 1]]
    with pytest.raises(ValueError, match="raise the row length"):
        first_fit_decreasing([11], 10)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(1, 20)), min_size=1, max_size=40),
       st.sampled_from([None, 20, 33]))
def test_packing_never_drops_or_duplicates(lengths, pack_length):
    cap = pack_length or max(max(a, b) for a, b in lengths)
    rows = first_fit_decreasing(lengths, (cap, cap))
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    for r in rows:
        assert sum(lengths[i][0] for i in r) <= cap and sum(lengths[i][1] for i in r) <= cap
    assert len(rows) <= len(lengths)
    assert len(rows) <= row_count(len(rows), len(lengths), pack_length is not None) <= len(lengths)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.text("abcdefgh", min_size=0, max_size=10), st.text("abcdefgh", min_size=0, max_size=10)),
                min_size=1, max_size=12),
       st.sampled_from(["seq2seq", "prefix_lm", "causal_lm"]), st.sampled_from([None, 24]))
def test_packed_tokens_are_the_examples(pairs, kind, pack_length):
    tok = build_tokenizer("char", alphabet="abcdefgh")
    form = Formulation(kind, tok, max_length=12)
    examples = form.encode_all([Pair(a, b) for a, b in pairs])
    batch = form.collate_packed(examples, pack_length)
    seg, ids = batch["segment_ids"], batch["input_ids"]
    found = []
    for r in range(seg.shape[0]):
        for s in range(1, int(seg[r].max()) + 1):
            where = seg[r] == s
            assert where.nonzero().flatten().diff().eq(1).all()  # contiguous
            found.append(ids[r][where].tolist())
    assert sorted(found) == sorted(e.input_ids for e in examples)
    assert int(num_examples(batch)) == len(examples)
    if kind == "seq2seq":
        labels, tseg = batch["labels"], batch["decoder_segment_ids"]
        assert (labels == IGNORE).equal(tseg == 0)
        got = sorted(labels[r][tseg[r] == s].tolist() for r in range(seg.shape[0]) for s in range(1, int(seg[r].max()) + 1))
        assert got == sorted(e.labels for e in examples)
    if pack_length:
        assert ids.shape[1] == pack_length and (ids.shape[0] % 8 == 0 or ids.shape[0] == len(examples))


def test_packed_layout_is_denser_and_counts(tok):
    form, examples, plain, packed = setup(tok, "t5", n=16)
    assert packed["input_ids"].shape[0] < plain["input_ids"].shape[0]
    assert packed["input_ids"].shape[1] == plain["input_ids"].shape[1]  # rows as long as the longest example
    # tokens counter (label tokens) and samples counter (examples) are unchanged by packing
    assert (packed["labels"] != IGNORE).sum() == (plain["labels"] != IGNORE).sum()
    assert int(num_examples(packed)) == int(num_examples(plain)) == 16


def test_segment_positions_and_mask_closed_form():
    seg = torch.tensor([[1, 1, 2, 2, 2, 0]])
    assert segment_positions(seg).tolist() == [[0, 1, 0, 1, 2, 0]]
    prefix = torch.tensor([[1, 0, 1, 1, 0, 0]])
    got = segment_mask(seg, seg, causal=True, prefix_mask=prefix)[0].int().tolist()
    assert got == [[1, 0, 0, 0, 0, 0],
                   [1, 1, 0, 0, 0, 0],
                   [0, 0, 1, 1, 0, 0],
                   [0, 0, 1, 1, 0, 0],
                   [0, 0, 1, 1, 1, 0],
                   [1, 1, 1, 1, 1, 1]]  # padding query: any key (never read, never NaN)
    # one segment, no padding: exactly the plain causal / prefix-LM mask
    one = torch.ones(1, 5, dtype=torch.long)
    assert segment_mask(one, one, causal=True)[0].equal(torch.ones(5, 5).tril().bool())


def test_decoder_input_starts_every_segment_with_decoder_start(tok):
    form, examples, _, packed = setup(tok, "t5")
    seg, labels = packed["decoder_segment_ids"], packed["labels"]
    dec = shift_right_per_segment(labels, seg, start_id=0, pad_id=0)
    starts = (segment_positions(seg) == 0) & (seg > 0)
    assert (dec[starts] == 0).all() and int(starts.sum()) == len(examples)
    inside = (segment_positions(seg) > 0) & (seg > 0)
    prev = torch.cat([labels[:, :1], labels[:, :-1]], dim=1)
    assert dec[inside].equal(prev[inside])  # otherwise the previous label of the same segment
    # the unpacked batch: HF's shift_right of each row
    model = build("t5", len(tok))
    for r in range(seg.shape[0]):
        for s in range(1, int(seg[r].max()) + 1):
            row_labels = labels[r][seg[r] == s][None]
            assert dec[r][seg[r] == s].equal(model._shift_right(row_labels)[0])


# ------------------------------------------------------------------------------------------------
# Packed == unpacked
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_per_example_loss_equals_unpacked(tok, variant):
    form, examples, plain, packed = setup(tok, variant)
    model = build(variant, len(tok)).eval()
    with torch.no_grad():
        ce_plain, lab_plain = per_token(form.kind, forward(model, plain).logits, plain["labels"])
        ce_packed, lab_packed = per_token(form.kind, forward(model, packed).logits, packed["labels"])
    want = (ce_plain.sum(1) / (lab_plain != IGNORE).sum(1))  # (B,) per-example mean loss
    seg = packed["decoder_segment_ids"] if form.kind == "seq2seq" else packed["segment_ids"][:, 1:]
    got = torch.empty(len(examples))
    for r, row in enumerate(plan(form, examples)):
        for s, i in enumerate(row, start=1):
            where = seg[r] == s
            got[i] = ce_packed[r][where].sum() / (lab_packed[r][where] != IGNORE).sum()
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("pack_length", [None, 30])
def test_batch_loss_and_gradients_equal_unpacked(tok, variant, pack_length):
    form, _, plain, packed = setup(tok, variant, pack_length=pack_length)
    model = build(variant, len(tok))
    loss_plain, grads_plain = loss_and_grads(model, form.kind, plain)
    loss_packed, grads_packed = loss_and_grads(model, form.kind, packed)
    torch.testing.assert_close(loss_packed, loss_plain, **TOL)
    assert grads_packed.keys() == grads_plain.keys() and grads_plain
    for name in grads_plain:
        torch.testing.assert_close(grads_packed[name], grads_plain[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")
    # the model's own loss (labels passed through) is the same token-weighted mean
    with torch.no_grad():
        torch.testing.assert_close(forward(model, packed).loss, forward(model, plain).loss, **TOL)


def test_causal_lm_loss_on_all_tokens(tok):
    """With loss on every token the first token of each segment must not be predicted from the
    previous segment's last token (its label is -100)."""
    form, _, plain, packed = setup(tok, "decoder_only", loss_on="all")
    model = build("decoder_only", len(tok))
    loss_plain, grads_plain = loss_and_grads(model, form.kind, plain)
    loss_packed, grads_packed = loss_and_grads(model, form.kind, packed)
    torch.testing.assert_close(loss_packed, loss_plain, **TOL)
    for name in grads_plain:
        torch.testing.assert_close(grads_packed[name], grads_plain[name], **TOL)


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_cross_contamination(tok, variant):
    """Changing every token of one segment leaves the logits of the other segments unchanged."""
    form, _, _, packed = setup(tok, variant)
    model = build(variant, len(tok)).eval()
    row = int(packed["segment_ids"].amax(1).argmax())  # a row holding several segments
    assert int(packed["segment_ids"][row].max()) >= 2
    changed = {k: v.clone() for k, v in packed.items()}
    hit = changed["segment_ids"][row] == 1
    changed["input_ids"][row, hit] = (changed["input_ids"][row, hit] + 1 - 3) % (len(tok) - 3) + 3
    if form.kind == "seq2seq":
        thit = changed["decoder_segment_ids"][row] == 1
        changed["labels"][row, thit] = (changed["labels"][row, thit] + 1 - 3) % (len(tok) - 3) + 3
        others = (changed["decoder_segment_ids"][row] > 1)
    else:
        others = changed["segment_ids"][row] > 1
    with torch.no_grad():
        before = packed_forward(model, packed).logits[row]
        after = packed_forward(model, changed).logits[row]
    assert not torch.allclose(before[~others], after[~others])  # the perturbation does something
    torch.testing.assert_close(after[others], before[others], rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["t5", "pseudo_dec", "decoder_only_prefix", "gpt2"])
def test_eager_equals_sdpa_on_packed_batch(tok, variant):
    _, _, _, packed = setup(tok, variant, pack_length=30)  # all-padding rows included
    assert (packed["segment_ids"].amax(1) == 0).any()
    eager, sdpa = build(variant, len(tok), "eager").eval(), build(variant, len(tok), "sdpa").eval()
    with torch.no_grad():
        a, b = packed_forward(eager, packed).logits, packed_forward(sdpa, packed).logits
    assert torch.isfinite(a).all() and torch.isfinite(b).all()  # padding rows and queries: no NaN
    torch.testing.assert_close(a, b, **TOL)


def test_pseudo_dec_positions_restart_per_segment(tok):
    """The position fix: packed == unpacked only because positions restart (a check that the test
    can fail: with positions 0..L-1 over the whole row, the losses differ)."""
    form, examples, plain, packed = setup(tok, "pseudo_dec")
    model = build("pseudo_dec", len(tok)).eval()
    with torch.no_grad():
        want = model(**plain).loss
        got = packed_forward(model, packed).loss
        enc = model.get_encoder()
        ids = packed["input_ids"]
        wrong = model(encoder_outputs=enc(input_ids=ids), labels=packed["labels"],
                      attention_mask=(packed["segment_ids"] > 0).long()).loss
    torch.testing.assert_close(got, want, **TOL)
    assert not torch.allclose(wrong, want, atol=1e-3)


def test_packed_forward_rejects_flex(tok):
    _, _, _, packed = setup(tok, "t5")
    model = build("t5", len(tok))
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="eager or sdpa"):
        packed_forward(model, packed)


def test_classification_cannot_pack(tok):
    form = Formulation("classification", tok, max_length=8)
    with pytest.raises(ValueError, match="cannot be packed"):
        form.collate_packed([])


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


def test_resolve_packing():
    assert resolve_packing("auto", "classification", 64) is False
    assert resolve_packing("auto", "seq2seq", 64) is True  # a fixed row length asks for packing
    assert resolve_packing("auto", "prefix_lm") is False  # measured: no gain over bucketing on CPU
    assert resolve_packing(True, "seq2seq") is True
    assert resolve_packing(False, "seq2seq", 64) is False


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.variant=enct5", "data.task=parity", "data.packing=true"], "data.packing"),
        (["data.pack_length=4"], "data.pack_length"),
        (["data.pack_length=0"], "data.pack_length"),
        (["data.packing=false", "data.pack_length=64"], "data.pack_length"),
        (["model.variant=gpt2", "data.pack_length=70"], "data.pack_length"),
        (["data.packing=maybe"], "data.packing"),
    ],
)
def test_config_errors(overrides, match):
    from t5lab.config import load_config

    with pytest.raises(ConfigError, match=match) as err:
        load_config(None, overrides)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------
# End to end
# ------------------------------------------------------------------------------------------------


WIDE = {"options": {"min_len": 1, "max_len": 7, "alphabet": "abcd"}}  # lengths that pack


@pytest.mark.slow
@pytest.mark.parametrize("model", [{"variant": "t5"}, {"variant": "decoder_only", "options": {"prefix_lm": True}}])
def test_train_with_packing_matches_unpacked_run(tmp_path, tiny_cfg, model):
    """`t5lab train` with data.packing=true: the loss falls, the samples counter counts examples,
    and the run follows the unpacked run step by step (same batches, same gradients)."""
    import csv

    from t5lab.train import train

    def run(packing: bool) -> list[dict]:
        cfg = tiny_cfg(train={"max_steps": 30, "lr": 1e-2, "log_every_n_steps": 1},
                       data={"packing": packing, "bucketing": False, **WIDE}, model=model)
        (result,) = train(cfg, out=str(tmp_path / str(packing)), progress=False)
        return [r for r in csv.DictReader(open(result.run_dir / "metrics.csv")) if r.get("train_loss")]

    from t5lab.config import load_config
    from t5lab.train.run import build_pieces

    dm = build_pieces(load_config(tiny_cfg(data={"packing": True, "bucketing": False, **WIDE}, model=model))).datamodule
    first = next(iter(dm.train_dataloader()))
    assert dm.packing and first["input_ids"].shape[0] < 8  # the run really packs

    packed, plain = run(True), run(False)
    losses = [float(r["train_loss"]) for r in packed]
    assert len(losses) == 30 and losses[-1] < 0.75 * losses[0]
    assert float(packed[-1]["samples"]) == 30 * 8  # examples, not packed rows
    assert [r["tokens"] for r in packed] == [r["tokens"] for r in plain]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor([float(r["train_loss"]) for r in plain]),
                               rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_packed_run_resumes_exactly(tmp_path, tiny_cfg, monkeypatch):
    """A packed run that crashes after its epoch-1 checkpoint and is resumed ends with the same
    weights as an uninterrupted one (the packed layout is a pure function of the batch)."""
    import lightning.pytorch as pl
    from safetensors.torch import load_file

    import t5lab.train.run as run_module

    cfg = tiny_cfg(model={"dropout": 0.1}, train={"max_steps": 12, "schedule": "linear", "lr": 3e-3},
                   data={"packing": True, "bucketing": True, **WIDE})
    (reference,) = run_module.train(cfg, out=str(tmp_path / "ref"), progress=False)

    class Crash(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 8:  # epoch 2 (6 steps per epoch): after the epoch-1 checkpoint
                raise KeyboardInterrupt

    make = run_module.make_trainer

    def crashing(*args, **kwargs):
        trainer = make(*args, **kwargs)
        trainer.callbacks.append(Crash())
        return trainer

    monkeypatch.setattr(run_module, "make_trainer", crashing)
    with pytest.raises(BaseException):  # noqa: B017 - whatever Lightning turns the interrupt into
        run_module.train(cfg, out=str(tmp_path / "crash"), progress=False)
    monkeypatch.setattr(run_module, "make_trainer", make)
    (run_dir,) = list((tmp_path / "crash").glob("*/*"))
    assert not (run_dir / "DONE").exists()
    run_module.resume(run_dir, progress=False)
    a = load_file(reference.run_dir / "model" / "model.safetensors")
    b = load_file(run_dir / "model" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)


def test_gpt2_explicit_mask_equals_transformers_packed_detection(tok):
    """transformers 5 isolates packed sequences from position_ids alone (find_packed_sequence_indices)
    only when there is no attention_mask and no cache; packed_forward's explicit 4D mask gives the
    same logits and does not depend on that (with the default use_cache=True, GPT-2 builds a cache
    first and the detection is skipped: segments would see each other)."""
    _, _, _, packed = setup(tok, "gpt2")
    model = build("gpt2", len(tok), "sdpa").eval()
    real = packed["segment_ids"] > 0
    with torch.no_grad():
        ours = packed_forward(model, packed).logits
        detected = model(input_ids=packed["input_ids"], position_ids=segment_positions(packed["segment_ids"]),
                         use_cache=False).logits
    torch.testing.assert_close(ours[real], detected[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["t5", "decoder_only_prefix"])
def test_packed_under_bf16_autocast(tok, variant):
    """The fast path's bf16 autocast: the 4D masks still work (sdpa), and the packed loss stays
    within bf16 rounding of the unpacked bf16 loss (measured gap ~3e-4) and of fp32 (~2e-3)."""
    _, _, plain, packed = setup(tok, variant)
    model = build(variant, len(tok), "sdpa").eval()
    with torch.no_grad():
        fp32 = model(**plain).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain_bf16, packed_bf16 = model(**plain).loss, packed_forward(model, packed).loss
    torch.testing.assert_close(packed_bf16, plain_bf16, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(packed_bf16, fp32, rtol=1e-2, atol=1e-2)
