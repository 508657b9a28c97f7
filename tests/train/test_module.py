"""The training step's loss: computed once, equal to the reference loss from full logits, with the
same gradients; LM head only where the loss is taken; counters and logging without per-step syncs."""

from __future__ import annotations

import csv

import pytest
import torch

from t5lab.config import load_config
from t5lab.formulation import IGNORE, classification_loss, token_loss
from t5lab.train.module import T5LabModule, logits_to_keep
from t5lab.train.run import build_pieces, train
from tests.train.conftest import tiny

VARIANTS = {
    "t5": dict(model={"variant": "t5"}),
    "pseudo_dec": dict(model={"variant": "pseudo_dec"}),
    "decoder_only-causal": dict(model={"variant": "decoder_only"}),
    "decoder_only-prefix": dict(model={"variant": "decoder_only", "options": {"prefix_lm": True}}),
    "gpt2": dict(model={"variant": "gpt2"}),
    "enct5": dict(model={"variant": "enct5"}, data={"task": "parity", "options": {"min_len": 2, "max_len": 6}}),
}


def _module_and_batch(case: str, **sections):
    raw = tiny(**VARIANTS[case])
    for key, value in sections.items():
        raw[key].update(value)
    pieces = build_pieces(load_config(raw))
    module = T5LabModule(pieces.model, pieces.cfg, pieces.formulation.kind, pieces.formulation.problem_type)
    batch = next(iter(pieces.datamodule.train_dataloader()))
    return module, batch


def _reference_loss(module: T5LabModule, batch: dict) -> torch.Tensor:
    """The loss as defined for validation: full logits, then token_loss / classification_loss."""
    logits = module.model(**batch).logits
    if module.kind == "classification":
        loss_sum, n, _ = classification_loss(logits, batch["labels"], module.problem_type)
    else:
        loss_sum, n, _ = token_loss(module.kind, logits, batch["labels"])
    return loss_sum / n


@pytest.mark.parametrize("case", list(VARIANTS))
def test_train_loss_and_gradients_equal_the_reference(case):
    module, batch = _module_and_batch(case, model={"dropout": 0.0})
    module.model.train()
    params = [p for p in module.model.parameters() if p.requires_grad]

    ref = _reference_loss(module, batch)
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)
    loss, n = module._train_loss(batch)
    grads = torch.autograd.grad(loss, params, allow_unused=True)

    torch.testing.assert_close(loss, ref)
    for a, b in zip(grads, ref_grads):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b)
    labels = batch["labels"]
    if module.kind == "classification":
        assert int(n) == labels.shape[0]
    else:
        shift = 0 if module.kind == "seq2seq" else 1
        assert int(n) == int((labels[:, shift:] != IGNORE).sum())


@pytest.mark.parametrize("case", ["decoder_only-prefix", "gpt2"])
def test_decoder_lm_head_runs_only_where_the_loss_is_taken(case):
    """Copy with a prefix (prefix LM) or loss on the target only (GPT-2): same loss, fewer LM-head rows."""
    module, batch = _module_and_batch(case, model={"dropout": 0.0}, data={"options": {"min_len": 6, "max_len": 8, "alphabet": "abcd"}})
    keep = logits_to_keep(batch["labels"])
    assert 0 < keep < batch["input_ids"].shape[1]  # every prompt is >= 7 tokens: something to drop

    head_rows = []
    hook = module.model.get_output_embeddings().register_forward_hook(lambda m, i, o: head_rows.append(o.shape[1]))
    loss, _ = module._train_loss(batch)
    hook.remove()
    assert head_rows == [keep]
    with torch.no_grad():
        ref = _reference_loss(module, batch)
    torch.testing.assert_close(loss.detach(), ref)


def test_logits_to_keep_closed_form():
    x = IGNORE
    # first labelled column 3 (row 1) -> logits from position 2 on: keep T - 2
    labels = torch.tensor([[x, x, x, x, 5, 6], [x, x, x, 7, 8, x]])
    assert logits_to_keep(labels) == 6 - 2
    assert logits_to_keep(torch.tensor([[1, 2, 3], [x, 4, 5]])) == 0  # column 1 labelled: keep all
    assert logits_to_keep(torch.full((2, 4), x)) == 0  # nothing labelled: keep all
    assert logits_to_keep(torch.tensor([[x, x, 9]])) == 2


def test_counters_and_logged_rows_match_the_batches(tmp_path):
    """samples / tokens counted as tensors equal the reference sums over the training batches, and
    metrics.csv has a row every log_every_n_steps steps only."""
    raw = tiny(name="count", data={"train": 32}, train={"max_steps": 8, "log_every_n_steps": 3, "batch_size": 8})
    cfg = load_config(raw)
    loader = build_pieces(cfg).datamodule.train_dataloader()
    per_step = []
    for epoch in range(2):  # 4 steps per epoch; the sampler's order is a function of (seed, epoch)
        loader.batch_sampler.set_epoch(epoch) if hasattr(loader.batch_sampler, "set_epoch") else loader.sampler.set_epoch(epoch)
        per_step += [(b["input_ids"].shape[0], int((b["labels"] != IGNORE).sum())) for b in loader]
    [result] = train(raw, out=tmp_path)
    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv")))
    train_rows = {int(r["step"]): r for r in rows if r["train_loss"]}
    assert sorted(train_rows) == [3, 6]
    for step, row in train_rows.items():
        assert int(row["samples"]) == sum(s for s, _ in per_step[:step])
        assert int(row["tokens"]) == sum(t for _, t in per_step[:step])
    ckpt = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["t5lab"]["samples_seen"] == 64
    assert ckpt["t5lab"]["tokens_seen"] == sum(t for _, t in per_step)
