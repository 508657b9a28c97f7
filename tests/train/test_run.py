"""One tiny run end to end: the run-directory contract, metrics recomputed from the saved model."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from t5lab.config import load_config
from t5lab.formulation import Formulation, token_loss
from t5lab.tasks import build_splits
from t5lab.train.run import train
from tests.train.conftest import tiny


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    # 48 train examples / batch 8 = 6 steps = one epoch: the last validation sees the final weights
    [result] = train(tiny(), out=out)
    return result


def test_run_directory_layout(finished_run):
    d = finished_run.run_dir
    assert d.parent.name == "tiny" and d.parent.parent.is_dir()
    for name in ("config.yaml", "metrics.csv", "samples.txt", "DONE", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (d / name).is_file(), name
    assert (d / "model" / "model.safetensors").is_file()
    assert not list(d.rglob("*.tmp")), "temporary files left behind"
    # config.yaml is the resolved config and loads back to the same thing
    assert load_config(d / "config.yaml").to_dict() == load_config(tiny()).to_dict()
    done = json.loads((d / "DONE").read_text())
    assert done["step"] == 6 and "test_exact_match" in done["metrics"]


def test_metrics_csv_columns_and_counters(finished_run):
    rows = list(csv.DictReader(open(finished_run.run_dir / "metrics.csv")))
    cols = rows[0].keys()
    for c in ("step", "epoch", "samples", "tokens", "train_loss", "val_loss", "val_ppl", "val_token_acc", "val_exact_match"):
        assert c in cols, c
    train_rows = [r for r in rows if r["train_loss"]]
    # logged every 2 steps of 8 examples: samples = 8 * batches seen
    assert [int(r["samples"]) for r in train_rows] == [16, 32, 48]
    tokens = [int(r["tokens"]) for r in train_rows]
    assert tokens == sorted(tokens) and tokens[0] > 16  # several target tokens per example
    val = [r for r in rows if r["val_loss"]][-1]
    assert float(val["val_ppl"]) == pytest.approx(torch.tensor(float(val["val_loss"])).exp().item(), rel=1e-5)


def test_val_loss_recomputed_from_saved_model(finished_run):
    """The logged val_loss equals the token-weighted loss of model/ over the whole val split."""
    d = finished_run.run_dir
    cfg = load_config(d / "config.yaml")
    model = AutoModelForSeq2SeqLM.from_pretrained(d / "model").eval()
    tok = AutoTokenizer.from_pretrained(d / "model")
    f = Formulation.from_config(cfg, tok)
    batch = f.collate(f.encode_all(build_splits(cfg.data)["val"]))
    with torch.no_grad():
        loss_sum, n, correct = token_loss(f.kind, model(**batch).logits, batch["labels"])
    done = json.loads((d / "DONE").read_text())["metrics"]
    assert done["val_loss"] == pytest.approx((loss_sum / n).item(), rel=1e-5)
    assert done["val_token_acc"] == pytest.approx((correct / n).item(), rel=1e-6)


def test_samples_file_has_input_target_prediction(finished_run):
    text = (finished_run.run_dir / "samples.txt").read_text()
    assert "input:" in text and "target:" in text and "prediction:" in text and "[test" in text


def test_checkpoint_loads_with_weights_only(finished_run):
    ckpt = torch.load(finished_run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6 and ckpt["t5lab"]["samples_seen"] == 48
    assert yaml.safe_dump(ckpt["t5lab"]["config"])  # plain data


def test_bit_reproducible(finished_run, tmp_path):
    from safetensors.torch import load_file

    [again] = train(tiny(), out=tmp_path)
    a = load_file(finished_run.run_dir / "model" / "model.safetensors")
    b = load_file(again.run_dir / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_training_order_changes_every_epoch_and_is_seeded(tmp_path):
    """Each epoch draws a new order (bucketed or not), identical across runs with the same seed."""
    import lightning.pytorch as pl

    from t5lab.train import run as run_mod

    seen: list[list[list[int]]] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen[-1].append(batch["input_ids"][:, 0].tolist())

    original = run_mod.make_trainer

    def with_recorder(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.callbacks.append(Record())
        return trainer

    run_mod.make_trainer = with_recorder
    try:
        for bucketing in (True, False, True):
            seen.append([])
            train(tiny(name=f"order{bucketing}", train={"max_steps": 12}, data={"bucketing": bucketing}), out=tmp_path)
    finally:
        run_mod.make_trainer = original
    for batches in seen:
        assert len(batches) == 12 and batches[:6] != batches[6:]  # epoch 1 differs from epoch 0
    assert seen[0] == seen[2]


def test_first_epoch_ending_before_the_first_validation_is_quiet(tmp_path):
    """An epoch that ends before any validation has no val_loss for best.ckpt yet: no Lightning
    warning about a missing monitored key (it reads as a bug in the module), and best.ckpt is
    written at the first epoch end after a validation."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # 6 steps an epoch, the first validation at step 9
        [result] = train(tiny(name="late_val", train={"max_steps": 12, "val_check_interval": 9}), out=tmp_path)
    assert not [w for w in caught if "monitored key" in str(w.message)]
    assert (result.run_dir / "checkpoints" / "best.ckpt").is_file()
