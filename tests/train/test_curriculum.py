"""The length curriculum (t5lab.train.curriculum): the limit's schedule by hand, batches that keep
to it, the usual batches once it is over, rank shards of one draw, and a run that uses it."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch.utils.data import BatchSampler

from t5lab.cli import main
from t5lab.config import load_config
from t5lab.errors import ConfigError
from t5lab.train.curriculum import CurriculumBatchSampler, length_limit
from t5lab.train.data import EpochSampler
from t5lab.train.fast import BucketBatchSampler
from tests.train.conftest import tiny


@pytest.mark.parametrize(
    ("start", "steps", "longest", "expected"),
    [
        (4, 4, 12, [4, 6, 8, 10, 12, 12, 12]),  # 8 tokens over 4 steps: +2 a step
        (2, 3, 10, [2, 4, 7, 10, 10, 10, 10]),  # 2 + 8t/3 rounded down: 2, 4.67, 7.33
        (5, 10, 7, [5, 5, 5, 5, 5, 6, 6]),  # 2 tokens over 10 steps: +1 at step 5
        (9, 4, 7, [9, 9, 9, 9, 9, 9, 9]),  # start above the longest: everything from step 0
    ],
)
def test_length_limit_by_hand(start, steps, longest, expected):
    assert [length_limit(t, start, steps, longest) for t in range(7)] == expected


def lengths_of(n: int = 60, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, 21, (n,), generator=g).tolist()  # 2..20 tokens


def plain_base(n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1) -> BatchSampler:
    return BatchSampler(EpochSampler(n, seed, shuffle=True, rank=rank, world=world), batch_size, drop_last=False)


@pytest.mark.parametrize("bucketed", [False, True])
def test_batches_keep_to_the_limit_then_are_the_base_batches(bucketed):
    lengths = lengths_of()
    base = BucketBatchSampler(lengths, 4, seed=3) if bucketed else plain_base(len(lengths), 4, seed=3)
    reference = BucketBatchSampler(lengths, 4, seed=3) if bucketed else plain_base(len(lengths), 4, seed=3)
    sampler = CurriculumBatchSampler(lengths, base, batch_size=4, start=5, batches=20, seed=3)
    per_epoch = len(sampler)
    assert per_epoch == len(reference) == 15
    seen_limits = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        if bucketed:
            reference.set_epoch(epoch)
        else:
            reference.sampler.set_epoch(epoch)
        expected = list(reference)
        for k, batch in enumerate(sampler):
            g = epoch * per_epoch + k
            if g < 20:
                limit = 5 + (20 - 5) * g // 20  # start 5, longest 20
                assert len(batch) == 4 and len(set(batch)) == 4  # no example twice in one batch
                assert max(lengths[i] for i in batch) <= limit, (g, batch)
                seen_limits.append(limit)
            else:
                assert batch == expected[k]  # after the curriculum: the usual batches, unchanged
    assert seen_limits[0] == 5 and seen_limits[-1] == 19  # the limit rose over the 20 batches
    # the first batches draw only from the short inputs, and are not the base's batches
    sampler.set_epoch(0)
    first = next(iter(sampler))
    assert max(lengths[i] for i in first) <= 5


def test_the_draw_is_a_pure_function_of_seed_and_position():
    lengths = lengths_of()

    def batches(seed: int, epoch: int) -> list[list[int]]:
        s = CurriculumBatchSampler(lengths, plain_base(60, 4, seed), 4, start=8, batches=40, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert batches(0, 1) == batches(0, 1)  # epoch 1 (global batches 15-29) is still under the curriculum
    assert batches(0, 1) != batches(0, 0) and batches(1, 0) != batches(0, 0)


def test_ranks_take_disjoint_slices_of_one_draw():
    lengths = lengths_of(80)
    one = CurriculumBatchSampler(lengths, plain_base(80, 6), 6, start=10, batches=10, seed=0)
    ranks = [
        CurriculumBatchSampler(lengths, plain_base(80, 3, rank=r, world=2), 3, start=10, batches=10, seed=0, rank=r, world=2)
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1])  # every rank runs the same number of steps
    for g in range(10):
        a, b = ranks[0].draw(g), ranks[1].draw(g)
        assert not set(a) & set(b)
        assert sorted(a + b) == sorted(one.draw(g))  # the same global batch as one process of batch 6


def test_fewer_eligible_inputs_than_a_batch_draws_with_replacement():
    lengths = [3, 3, 9, 9, 9, 9, 9, 9]
    sampler = CurriculumBatchSampler(lengths, plain_base(8, 4), 4, start=3, batches=2, seed=0)
    batch = sampler.draw(0)
    assert len(batch) == 4 and set(batch) <= {0, 1}


def test_start_below_every_input_is_refused():
    with pytest.raises(ValueError, match=r"data.curriculum.start=2: .*the shortest 3"):
        CurriculumBatchSampler([3, 4, 5], plain_base(3, 2), 2, start=2, batches=5)


def raw_config(**data) -> dict:
    # inputs of 1-8 symbols: 2-9 tokens with eos
    return tiny(name="curriculum", data={"options": {"min_len": 1, "max_len": 8, "alphabet": "abcd"}, "train": 64,
                                         "max_length": 10, **data})


@pytest.mark.parametrize("variant", ["t5", "decoder_only"])
def test_a_run_s_training_loader_follows_the_curriculum(variant):
    """Through the harness (build_pieces -> datamodule): the first batches hold short inputs only,
    for seq2seq and decoder-only examples alike (their prompts: encoder input / `input </s>`)."""
    from t5lab.train.run import build_pieces

    cfg = load_config(raw_config(curriculum={"start": 3, "steps": 6}) | {"model": {"variant": variant, "d_model": 16,
                      "d_ff": 32, "d_kv": 4, "num_heads": 2, "num_layers": 1}})
    dm = build_pieces(cfg).datamodule
    assert dm.curriculum == (3, 6)
    source = [len(r.input) for r in dm.records["train"]]
    loader = dm.train_dataloader()
    assert isinstance(loader.batch_sampler, CurriculumBatchSampler) and dm.bucketing  # bucketed after it
    widths = []
    for k, batch in enumerate(loader):
        if k == 6:
            break
        limit = length_limit(k, 3, 6, 9) - 1  # tokens without eos = symbols
        assert max(source[i] for i in loader.batch_sampler.draw(k)) <= limit
        assert batch["labels"].shape[0] == 8
        widths.append(batch["input_ids"].shape[1])
    if variant == "t5":  # the encoder input itself: symbols + eos, padded to the batch's longest
        assert widths[0] <= 3 and max(widths) <= 9


def test_a_run_with_a_curriculum_trains_and_says_so(tmp_path, capsys):
    from t5lab.train.run import train

    [result] = train(raw_config(curriculum={"start": 4, "steps": 4}), out=tmp_path, progress=False)
    assert (result.run_dir / "DONE").exists()
    out = capsys.readouterr().out
    assert "data.curriculum: step 0 draws from the " in out and "training inputs with at most 4 tokens" in out


def test_bad_curriculum_settings_give_one_line_errors(tmp_path, capsys):
    for bad, needle in [({"start": 0, "steps": 5}, "data.curriculum.start"), ({"start": 4}, "data.curriculum.steps")]:
        with pytest.raises(ConfigError, match=needle):
            load_config(raw_config(curriculum=bad))
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw_config(curriculum={"start": 1, "steps": 5})))
    out = tmp_path / "runs"
    assert main(["train", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.curriculum.start=1" in err[0] and "set start >= 2" in err[0], err
    assert not out.exists() or not any(out.rglob("*"))  # nothing written for a refused config
