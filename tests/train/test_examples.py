"""examples/scaled_attention.py: a user-registered variant and task, trained with `t5lab --import`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForSeq2SeqLM, T5ForConditionalGeneration

from t5lab.plugins import import_user_modules
from tests.train.conftest import tiny

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scaled_attention.py"


@pytest.fixture(scope="module")
def example():
    import_user_modules([str(EXAMPLE)])
    return sys.modules["t5lab_user_scaled_attention"]


def _config(example, scale):
    return example.ScaledT5Config(
        vocab_size=20, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0, attention_scale=scale
    )


def test_scale_one_is_t5_and_scale_changes_scores(example):
    torch.manual_seed(0)
    scaled = example.ScaledT5ForConditionalGeneration(_config(example, 1.0)).eval()
    plain = T5ForConditionalGeneration(scaled.config).eval()
    plain.load_state_dict(scaled.state_dict())
    x, y = torch.tensor([[3, 4, 5, 6, 1]]), torch.tensor([[6, 5, 4, 3, 1]])
    torch.testing.assert_close(scaled(input_ids=x, labels=y).logits, plain(input_ids=x, labels=y).logits)
    # scale 0 removes the content part of the scores (position bias only): different logits
    zero = example.ScaledT5ForConditionalGeneration(_config(example, 0.0)).eval()
    zero.load_state_dict(scaled.state_dict())
    a = zero(input_ids=x, labels=y).logits
    assert not torch.allclose(a, scaled(input_ids=x, labels=y).logits)


@pytest.mark.slow
def test_import_example_and_train_from_cli(tmp_path, example):
    raw = tiny(name="ext", model={"variant": "scaled_t5", "options": {"attention_scale": 0.5}},
               data={"task": "swap_halves", "options": {"min_half": 1, "max_half": 2, "alphabet": "abc"}},
               train={"max_steps": 3})
    config = tmp_path / "ext.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "t5lab.cli", "--import", str(EXAMPLE), "train", str(config), "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    [done] = list((tmp_path / "runs").glob("ext/*/DONE"))
    assert json.loads(done.read_text())["step"] == 3
    assert "run directory:" in proc.stdout
    # the saved model reloads through the Auto class (the example registered it) with its option
    model = AutoModelForSeq2SeqLM.from_pretrained(done.parent / "model")
    assert type(model).__name__ == "ScaledT5ForConditionalGeneration" and model.config.attention_scale == 0.5


def test_unregistered_variant_points_to_import(tmp_path, capsys):
    from t5lab.cli import main

    raw = tiny(model={"variant": "not_registered_anywhere"})
    config = tmp_path / "x.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "model.variant" in err and "--import" in err and not (tmp_path / "runs").exists()
