"""The harness's fast path: auto settings, length bucketing, fused AdamW, pseudo_dec on copy."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from transformers import T5ForConditionalGeneration

from t5lab.bench.cases import t5_config
from t5lab.formulation import IGNORE, Example, Formulation
from t5lab.train.fast import (
    BucketBatchSampler,
    adamw_kwargs,
    cpu_bf16_is_fast,
    padding_fraction,
    resolve_bucketing,
    resolve_compile,
    resolve_fused,
    resolve_precision,
)

torch.set_num_threads(1)


def _examples(n: int = 96, seed: int = 0) -> list[Example]:
    """Seq2seq examples of varied length (2..20 input tokens, 1..12 target tokens, eos=1 last)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        src = [rng.randrange(3, 60) for _ in range(rng.randint(2, 20))] + [1]
        tgt = [rng.randrange(3, 60) for _ in range(rng.randint(1, 12))] + [1]
        out.append(Example(src, tgt, prompt=src, target=tgt))
    return out


def _lengths(examples):
    return [len(e.input_ids) for e in examples]


# ------------------------------------------------------------------------------------------------
# BucketBatchSampler


def test_bucket_sampler_covers_every_example_once_and_is_a_function_of_seed_and_epoch():
    lengths = _lengths(_examples())
    s = BucketBatchSampler(lengths, batch_size=8, seed=3, pool=4)
    first = s.batches()
    assert sorted(i for b in first for i in b) == list(range(len(lengths)))
    assert len(first) == len(s)
    assert BucketBatchSampler(lengths, 8, seed=3, pool=4).batches() == first  # same (seed, epoch)
    s.set_epoch(1)
    assert s.batches() != first  # a new order each epoch
    s.set_epoch(0)
    assert s.batches() == first  # ... and the old one back after a restore


@pytest.mark.parametrize("n,batch,pool", [(96, 8, 4), (97, 8, 3), (10, 4, 50), (5, 8, 2)])
def test_bucket_sampler_len_matches_batches(n, batch, pool):
    s = BucketBatchSampler(list(range(n)), batch, seed=0, pool=pool)
    assert len(s) == len(s.batches())
    assert all(1 <= len(b) <= batch for b in s.batches())


def test_bucket_sampler_shards_ranks_disjointly_with_equal_step_counts():
    lengths = _lengths(_examples(101))
    shards = [BucketBatchSampler(lengths, 8, seed=1, rank=r, world=2, pool=3) for r in range(2)]
    seen = [sorted(i for b in s.batches() for i in b) for s in shards]
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) == len(seen[1]) == 50  # 101 trimmed to a multiple of the world size
    assert len(shards[0]) == len(shards[1])


def test_bucketing_cuts_padding_against_random_batches():
    lengths = _lengths(_examples(400))
    order = torch.randperm(400, generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [order[i : i + 16] for i in range(0, 400, 16)]
    bucketed = BucketBatchSampler(lengths, 16, seed=0, pool=25).batches()
    assert padding_fraction(bucketed, lengths) < 0.5 * padding_fraction(random_batches, lengths)
    assert padding_fraction([[0], [1]], [3, 5]) == 0.0
    assert padding_fraction([[0, 1]], [3, 5]) == pytest.approx(1 - 8 / 10)


def test_bucketed_batches_give_the_same_per_example_loss():
    """Padding is masked: which examples share a batch must not change any example's loss."""
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config("tiny", vocab_size=64, num_layers=1)).eval()
    examples = _examples(48)
    form = Formulation("seq2seq", SimpleNamespace(pad_token_id=0, eos_token_id=1))

    def per_example(batches):
        out = {}
        for idx in batches:
            batch = form.collate([examples[i] for i in idx])
            with torch.no_grad():
                logits = model(**batch).logits  # (B, T, V)
            nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), batch["labels"], ignore_index=IGNORE, reduction="none"
            )  # (B, T), 0 where labels are padding
            counts = (batch["labels"] != IGNORE).sum(1)
            for i, s, c in zip(idx, nll.sum(1), counts):
                out[i] = (s / c).item()
        return out

    alone = per_example([[i] for i in range(len(examples))])  # no padding at all
    mixed = per_example([list(range(i, i + 8)) for i in range(0, 48, 8)])
    bucketed = per_example(BucketBatchSampler(_lengths(examples), 8, seed=0, pool=3).batches())
    keys = sorted(alone)
    ref = torch.tensor([alone[k] for k in keys])
    torch.testing.assert_close(torch.tensor([bucketed[k] for k in keys]), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor([mixed[k] for k in keys]), ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# "auto" settings


def test_auto_precision_follows_the_measured_bf16_rate_on_cpu():
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if cpu_bf16_is_fast() else "32")
    for explicit in ("32", "bf16-mixed", "16-mixed"):
        assert resolve_precision(explicit, "cpu") == explicit


def test_auto_compile_fused_and_bucketing():
    assert resolve_compile("auto", "cpu") is False  # measured: compile costs minutes on CPU, gains nothing
    assert resolve_compile(True, "cpu") is True
    assert resolve_fused("auto") is True
    # Lightning's MixedPrecision plugin cannot clip optimizers that unscale internally (fused AdamW)
    assert resolve_fused("auto", precision="16-mixed", clip=1.0) is False
    assert resolve_fused("auto", precision="bf16-mixed", clip=1.0) is False
    assert resolve_fused("auto", precision="bf16-mixed", clip=None) is True
    with pytest.raises(ValueError, match="cannot clip"):
        resolve_fused(True, precision="bf16-mixed", clip=1.0)
    assert resolve_fused("auto", optimizer="adafactor") is False
    with pytest.raises(ValueError, match="no fused kernel"):
        resolve_fused(True, optimizer="adafactor")
    assert adamw_kwargs(False) == {}
    assert resolve_bucketing("auto", [3, 3, 3]) is False
    assert resolve_bucketing("auto", [3, 4]) is True
    assert resolve_bucketing(False, [3, 4]) is False


def test_fused_adamw_matches_the_for_loop_adamw():
    torch.manual_seed(0)
    ref = torch.nn.Linear(8, 4)
    fused = torch.nn.Linear(8, 4)
    fused.load_state_dict(ref.state_dict())
    opts = [torch.optim.AdamW(ref.parameters(), lr=1e-2, foreach=False),
            torch.optim.AdamW(fused.parameters(), lr=1e-2, **adamw_kwargs("auto"))]
    assert opts[1].defaults["fused"]
    x = torch.randn(16, 8)
    for _ in range(5):
        for m, o in zip((ref, fused), opts):
            m(x).pow(2).mean().backward()
            o.step()
            o.zero_grad()
    for a, b in zip(ref.parameters(), fused.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_config_keys_and_their_defaults():
    from t5lab.config import load_config
    from t5lab.errors import ConfigError

    cfg = load_config(None)
    assert (cfg.train.precision, cfg.train.compile, cfg.train.fused_optimizer, cfg.data.bucketing) == ("auto",) * 4
    cfg = load_config(None, ["train.compile=false", "data.bucketing=true", "train.precision=32"])
    assert (cfg.train.compile, cfg.data.bucketing, cfg.train.precision) == (False, True, "32")
    with pytest.raises(ConfigError, match="compile"):
        load_config(None, ["train.compile=sometimes"])


# ------------------------------------------------------------------------------------------------
# pseudo_dec trained on a task whose target equals its input


def test_harness_pseudo_dec_stays_seq2seq_on_copy():
    from t5lab.config import ModelConfig
    from t5lab.models.registry import BuildInfo, build_model

    info = BuildInfo(vocab_size=32)
    cfg = ModelConfig(variant="pseudo_dec", d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=1)
    model = build_model(cfg, info).eval()
    assert model.config.causal_LM is False
    ids = torch.tensor([[5, 6, 7, 1], [8, 9, 1, 0]])
    labels = ids.masked_fill(ids == 0, IGNORE)  # copy: labels == input ids -> auto-detect would say causal
    batch = dict(input_ids=ids, attention_mask=(ids != 0).long(), labels=labels)
    with torch.no_grad():
        default = model(**batch).loss
        seq2seq = model(**batch, causal_LM=False).loss
        causal = model(**batch, causal_LM=True).loss
    torch.testing.assert_close(default, seq2seq)
    assert not torch.allclose(default, causal)
    explicit = ModelConfig(variant="pseudo_dec", d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=1,
                           options={"causal_LM": True})
    assert build_model(explicit, info).config.causal_LM is True  # an explicit choice is kept


# ------------------------------------------------------------------------------------------------
# the harness wires it up


def test_harness_datamodule_buckets_training_batches():
    from t5lab.config import load_config
    from t5lab.train.run import build_pieces

    base = {"model": {"variant": "t5", "d_model": 16, "d_ff": 32, "d_kv": 4, "num_heads": 2, "num_layers": 1},
            "data": {"task": "copy", "options": {"min_len": 2, "max_len": 12}, "train": 256, "val": 8, "test": 8,
                     "max_length": 16},
            "train": {"batch_size": 16, "max_steps": 4}}
    on = build_pieces(load_config(base))
    off = build_pieces(load_config(base, ["data.bucketing=false"]))
    assert on.datamodule.bucketing and not off.datamodule.bucketing

    def waste(dm):
        loader = dm.train_dataloader()
        real = padded = 0
        for batch in loader:
            real += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
        return 1 - real / padded, len(loader)

    (w_on, n_on), (w_off, n_off) = waste(on.datamodule), waste(off.datamodule)
    assert n_on == n_off == 16
    assert w_on < 0.5 * w_off


def test_maybe_compile_compiles_the_hf_model_in_place_and_keeps_checkpoint_keys():
    from t5lab.train.fast import maybe_compile

    class Wrapper(torch.nn.Module):  # stands for T5LabModule: the HF model is `.model`
        def __init__(self):
            super().__init__()
            self.model = T5ForConditionalGeneration(t5_config("tiny", num_layers=1))

    w = Wrapper()
    keys = list(w.state_dict())
    assert maybe_compile(w, "auto", "cpu") is w and w.model._compiled_call_impl is None  # auto: not on CPU
    assert maybe_compile(w, True, "cpu") is w
    assert w.model._compiled_call_impl is not None  # compiled lazily, on the first call
    assert list(w.state_dict()) == keys  # no `_orig_mod.` prefixes: checkpoints and save_pretrained unchanged
