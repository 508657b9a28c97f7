"""Resumed == uninterrupted for a run killed after an epoch-end checkpoint, when the validation
interval does not divide the epoch (the copy recipe's case: 782 bucketed batches per epoch,
val_check_interval 200; the resumed run logged another val_loss at step 4800).

Lightning 2.6 restarting from a checkpoint written at a training epoch's end, whose last batch was
not a validation batch, finds the epoch "not done" (TrainingEpochLoop._is_validation_done is False
while restarting until a validation has run) and trains one more batch from a fresh iterator of
the training loader: an extra step in the finished epoch, and every later step, val_loss and weight
shifted by one. The training loader is resumable (t5lab.train.data.ResumableLoader): the restart's
iterator yields only what the checkpointed epoch had left, nothing at an epoch end.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from t5lab.train.run import resume, train
from tests.train.conftest import tiny
from tests.train.test_faults import killed_run

# 100 examples of 1-8 symbols, batch 8: 13 (bucketed or not) batches per epoch; validation every
# 5 steps (does not divide 13); 30 steps: 2 epoch-end checkpoints (13, 26) and part of epoch 3.
# Dropout, a linear schedule, val_examples and an unreachable stop_at: the state that must survive.
EPOCH = 13


def config(variant: str, bucketing: bool, curriculum: dict | None = None) -> dict:
    return tiny(
        name=f"identity-{variant}-{bucketing}",
        model={"variant": variant, "d_model": 32, "d_ff": 64, "d_kv": 16, "dropout": 0.1},
        data={"options": {"min_len": 1, "max_len": 8, "alphabet": "abcd"}, "train": 100, "val": 8, "test": 8,
              "max_length": 10, "bucketing": bucketing, "curriculum": curriculum},
        train={"max_steps": 30, "val_check_interval": 5, "val_examples": 4, "schedule": "linear", "warmup_steps": 3,
               "lr": 3e-3, "log_every_n_steps": 1, "stop_at": {"val_exact_match": 0.999}},
    )


def killed_after_step(out, raw, step: int):
    """A training process ended like ``kill -9`` right after training step ``step``; its run directory."""
    return killed_run(out, f"step:{step}", raw)  # RunGuard.on_train_batch_end's fault point


# the curriculum case: a length curriculum over 20 steps (t5lab.train.curriculum) is still on at the
# checkpoint (step 13) and at the kill (step 16), so the resumed run must redraw its batches 14-20
@pytest.mark.parametrize(
    ("variant", "bucketing", "curriculum"),
    [("gpt2", True, None), ("decoder_only", True, None), ("gpt2", False, None), ("t5", True, {"start": 3, "steps": 20})],
)
def test_resume_after_epoch_end_checkpoint_equals_uninterrupted(tmp_path, variant, bucketing, curriculum):
    raw = config(variant, bucketing, curriculum)
    [reference] = train(raw, out=tmp_path / "ref", progress=False)
    ref = reference.run_dir

    run = killed_after_step(tmp_path / "killed", raw, EPOCH + 3)  # 3 steps into epoch 2: they are lost
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == EPOCH and EPOCH % 5 != 0  # the epoch-end checkpoint, not a validation step
    resume(run, progress=False)

    # every row: train_loss of every step, val_* every 5 steps, the same epoch column, the test row
    assert (run / "metrics.csv").read_text() == (ref / "metrics.csv").read_text()
    assert (run / "samples.txt").read_text() == (ref / "samples.txt").read_text()
    a, b = load_file(ref / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    # the run's last checkpoint (epoch 2's end) holds the same optimizer and scheduler state
    end_a = torch.load(ref / "checkpoints" / "last.ckpt", weights_only=True)
    end_b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert end_b["global_step"] == end_a["global_step"] == 30
    assert end_b["lr_schedulers"] == end_a["lr_schedulers"]
    sa, sb = end_a["optimizer_states"][0]["state"], end_b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(sb[i][name], sa[i][name], rtol=0, atol=0)


@pytest.mark.parametrize("bucketing", [True, False])
def test_resumable_loader_state_continues_the_epoch(bucketing):
    """The loader's state: a restored loader's first iteration yields what the epoch had left (none
    after its end), and the next one the following epoch's order, whatever set_epoch said before."""
    from t5lab.train.data import EpochSampler, ResumableLoader
    from t5lab.train.fast import BucketBatchSampler

    def loader(epoch):
        if bucketing:
            return ResumableLoader(list(range(20)), batch_sampler=BucketBatchSampler([i % 5 for i in range(20)], 4, seed=3),
                                   collate_fn=list, epoch=lambda: epoch[0])
        return ResumableLoader(list(range(20)), batch_size=4, sampler=EpochSampler(20, 3, shuffle=True), collate_fn=list,
                               epoch=lambda: epoch[0])

    current = [1]
    first = loader(current)
    epoch1 = list(first)
    current[0] = 2
    epoch2 = list(first)
    assert len(epoch1) == 5 and epoch1 != epoch2 and sorted(sum(epoch1, [])) == list(range(20))

    current[0] = 1
    it = iter(first)
    taken = [next(it), next(it)]
    assert first.state_dict() == {"epoch": 1, "batches": 2}
    again = loader([99])  # the trainer's epoch is not read for the restored iteration
    again.load_state_dict(first.state_dict())
    assert taken + list(again) == epoch1
    assert again.state_dict() == {"epoch": 1, "batches": 5}

    trainer_epoch = [1]
    ended = loader(trainer_epoch)
    ended.load_state_dict({"epoch": 1, "batches": 5})  # an epoch-end checkpoint
    assert list(ended) == []
    trainer_epoch[0] = 2
    assert list(ended) == epoch2
