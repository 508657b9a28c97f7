"""Runs that go wrong without a crash: divergence, huge metrics, data changed behind the user's back."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from t5lab.cli import main
from t5lab.tasks import build_splits
from tests.train.conftest import tiny


def write(tmp_path, raw, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


# -- divergence ------------------------------------------------------------------------------------


def test_learning_rate_1e3_stops_with_one_line_and_no_done(tmp_path, capsys):
    """The issue's case: train.lr=1e3 drives the loss from ~5 to ~1e7 within two steps."""
    out = tmp_path / "runs"
    code = main(["train", write(tmp_path, tiny(name="div", train={"max_steps": 24})), "train.lr=1e3", "--out", str(out), "--no-progress"])
    assert code == 2
    line = one_error_line(capsys)
    assert line.startswith("error: training diverged at step ") and "x the first training loss" in line
    [run] = list(out.glob("div/*"))
    assert not (run / "DONE").exists()


def test_divergence_after_a_checkpoint_keeps_it(tmp_path, capsys, monkeypatch):
    """A loss blown up 1e4-fold from step 9 on (finite): stopped at step 9, last.ckpt of step 6 kept
    and finite, no DONE; the message names the checkpoint to resume from."""
    from t5lab.train.module import T5LabModule

    original = T5LabModule._train_loss

    def blown_up(self, batch):
        loss, n = original(self, batch)
        return (loss * 1e4 if self.training and self.global_step >= 8 else loss), n

    monkeypatch.setattr(T5LabModule, "_train_loss", blown_up)
    out = tmp_path / "runs"
    assert main(["train", write(tmp_path, tiny(name="div2", train={"max_steps": 12})), "--out", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys)
    [run] = list(out.glob("div2/*"))
    assert "at step 9: train_loss" in line and f"--resume {run}" in line  # checked once step 9 is applied
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6 and all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())
    assert not (run / "DONE").exists()


def test_divergence_check_can_be_turned_off_and_huge_metrics_print_as_stored(tmp_path, capsys):
    """train.divergence=null: the run ends; val_ppl (e^(1e7), capped where float32 ends) is printed,
    stored in metrics.csv and in DONE as the same finite value, not inf."""
    import csv
    import math
    import re

    out = tmp_path / "runs"
    raw = tiny(name="huge", train={"max_steps": 12, "lr": 1e3, "divergence": None})
    assert main(["train", write(tmp_path, raw), "--out", str(out), "--no-progress"]) == 0
    [run] = list(out.glob("huge/*"))
    stored = [float(r["val_ppl"]) for r in csv.DictReader(open(run / "metrics.csv")) if r["val_ppl"]]
    printed = [float(x) for x in re.findall(r"val_ppl=(\S+)", (run / "samples.txt").read_text())]
    assert len(stored) == len(printed) == 2 and all(math.isfinite(v) for v in stored)
    assert [f"{v:.4g}" for v in stored] == [f"{v:.4g}" for v in printed]
    assert json.loads((run / "DONE").read_text())["metrics"]["val_ppl"] == stored[-1]


def test_divergence_bound_is_floored_at_a_uniform_guess_for_a_trained_start(tmp_path):
    """A run from a trained init_from starts at loss ~4e-5 (measured: histogram); 0.009 at step 45
    is noise, not divergence; 100 x ln(vocab) is. A fresh run's first loss (above ln(vocab)) is the
    reference as before."""
    import math
    from types import SimpleNamespace

    from t5lab.train.callbacks import DivergenceError, RunGuard

    module = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(vocab_size=64)))
    guard = RunGuard(None, 100.0, tmp_path)
    guard.on_fit_start(None, module)
    guard._check("train_loss", 4.283e-05, 0)
    guard._check("train_loss", 0.009036, 45)
    guard._check("val_loss", 100 * math.log(64) - 1e-3, 46)
    with pytest.raises(DivergenceError, match=r"exceeds 100 x ln\(vocabulary size\) 4.159 \(the first training loss 4.283e-05"):
        guard._check("train_loss", 100 * math.log(64) + 1e-3, 47)

    fresh = RunGuard(None, 100.0, tmp_path)
    fresh.on_fit_start(None, module)
    fresh._check("train_loss", 5.0, 0)
    fresh._check("train_loss", 499.0, 1)
    with pytest.raises(DivergenceError, match="exceeds 100 x the first training loss 5 "):
        fresh._check("train_loss", 501.0, 2)


def test_divergence_factor_is_validated():
    from t5lab.config import load_config
    from t5lab.errors import ConfigError

    assert load_config(tiny()).train.divergence == 100.0  # on by default
    with pytest.raises(ConfigError, match="train.divergence"):
        load_config(tiny(), overrides=["train.divergence=0.5"])


# -- data changes are said -------------------------------------------------------------------------


def test_max_length_truncation_is_said_once_with_counts(tmp_path, capsys):
    raw = tiny(name="cut", train={"max_steps": 2}, data={"max_length": 3})
    assert main(["train", write(tmp_path, raw), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    from t5lab.config import load_config

    splits = build_splits(load_config(raw).data)
    # char tokenizer: one token per character; max_length 3 keeps 2 tokens + eos
    counts = {k: sum(max(len(r.input), len(r.target)) > 2 for r in v) for k, v in splits.items()}
    expected = ", ".join(f"{counts[k]} of {len(splits[k])} {k}" for k in ("train", "val", "test") if counts[k])
    assert out.count("data.max_length=3 cuts ") == 1
    assert f"data.max_length=3 cuts {expected} examples (longest: 4 tokens + eos)" in out


def test_truncation_refused_with_truncate_false(tmp_path, capsys):
    raw = tiny(name="cut", data={"max_length": 3, "truncate": False})
    assert main(["train", write(tmp_path, raw), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "data.max_length=3 cuts" in line and "raise data.max_length to 5" in line
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.fixture
def foreign_t5(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=384, d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=1,
                                                relative_attention_num_buckets=8, decoder_start_token_id=0))
    model.save_pretrained(tmp_path / "t5_384")
    return tmp_path / "t5_384"


def test_init_from_vocab_mismatch_is_an_error(tmp_path, capsys, foreign_t5):
    capsys.readouterr()  # the fixture's save_pretrained progress bar
    raw = tiny(name="init", model={"init_from": str(foreign_t5)}, train={"max_steps": 2})
    assert main(["train", write(tmp_path, raw), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "vocabulary of 384 tokens" in line and "model.resize_embeddings=true" in line
    assert not (tmp_path / "runs").exists()


def test_init_from_vocab_resize_when_asked(tmp_path, capsys, foreign_t5):
    raw = tiny(name="init", model={"init_from": str(foreign_t5), "resize_embeddings": True}, train={"max_steps": 2})
    assert main(["train", write(tmp_path, raw), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    assert "embeddings resized from 384 to" in capsys.readouterr().out


def test_init_from_a_damaged_run_model_is_refused(tmp_path, capsys):
    from t5lab.train.run import train

    [src] = train(tiny(name="src", train={"max_steps": 2}), out=tmp_path / "src")
    weights = src.run_dir / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-50] ^= 1
    weights.write_bytes(bytes(data))
    raw = tiny(name="init", model={"init_from": str(src.run_dir / "model")}, train={"max_steps": 2})
    assert main(["train", write(tmp_path, raw), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "model.safetensors: sha256 does not match" in line
    assert main(["train", write(tmp_path, raw), "--out", str(tmp_path / "runs"), "--no-progress", "--no-verify"]) == 0


def test_non_contiguous_labels_get_a_warning_with_the_mapping(tmp_path, capsys):
    data = tmp_path / "labels.csv"
    rows = ["text,label"] + [f"{'ab' * (i % 3 + 1)}{i},{(0, 1, 7)[i % 3]}" for i in range(30)]
    data.write_text("\n".join(rows) + "\n")
    raw = tiny(name="labels", model={"variant": "enct5"}, train={"max_steps": 2},
               data={"task": str(data), "options": {}, "train": 20, "val": 5, "test": 5})
    assert main(["train", write(tmp_path, raw), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("warning: classification labels [0, 1, 7] are not contiguous") == 1
    assert "the model gets 8 outputs and 5 never occur" in out and "(0->0, 1->1, 7->2)" in out


# -- a learned position table too small for the run ----------------------------------------------------

# copy of 2-4 symbols (data.max_length 8): prompt <= 5 tokens, target <= 5 (eos included)
POSITION_TABLES = [
    # decoder_only, one count over prompt and target: the longest `input </s> target </s>`, 10 tokens
    ("decoder_only", {"position_encoding": "absolute"}, 10),
    # restarted target positions: the prompt 0..4, the target 1..5
    ("decoder_only", {"prefix_lm": True, "position_encoding": "absolute", "target_positions": "restart"}, 6),
    # pseudo_dec: each side alone, 5 tokens
    ("pseudo_dec", {}, 5),
]


@pytest.mark.parametrize(("variant", "options", "needed"), POSITION_TABLES)
def test_a_position_table_too_small_is_one_line_before_any_run_dir(tmp_path, capsys, variant, options, needed):
    short = tiny(name="pos", model={"variant": variant, "options": {**options, "max_position_embeddings": needed - 1}})
    assert main(["train", write(tmp_path, short), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert f"max_position_embeddings={needed - 1}" in line and f"at least {needed}" in line
    assert not (tmp_path / "runs").exists()  # nothing written
    fits = tiny(name="pos", model={"variant": variant, "options": {**options, "max_position_embeddings": needed}},
                train={"max_steps": 2})
    assert main(["train", write(tmp_path, fits), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0


@pytest.mark.parametrize(("variant", "options", "needed"), POSITION_TABLES)
def test_the_position_check_is_tight(tmp_path, monkeypatch, variant, options, needed):
    """Without the check, one row fewer than it asks for fails inside the model: it asks for no more
    than the run uses."""
    from t5lab.train import run

    monkeypatch.setattr(run, "check_position_table", lambda *args: None)
    short = tiny(name="pos", model={"variant": variant, "options": {**options, "max_position_embeddings": needed - 1}},
                 train={"max_steps": 2})
    with pytest.raises(ValueError, match="max_position_embeddings"):
        run.train(short, out=tmp_path / "runs", progress=False)


def test_positions_needed_closed_form():
    from t5lab.formulation import Example
    from t5lab.train.run import positions_needed

    # prompts of 3 and 6 tokens, targets of 5 and 2 (eos included)
    rows = {"train": [Example([0] * 8, [], prompt=[0] * 3, target=[0] * 5),
                      Example([0] * 8, [], prompt=[0] * 6, target=[0] * 2)]}
    assert positions_needed("seq2seq", rows, None, False) == 6
    assert positions_needed("seq2seq", rows, 9, False) == 9  # decoding may write 9 tokens
    assert positions_needed("prefix_lm", rows, None, True) == 6  # max(6, 5 + 1)
    assert positions_needed("prefix_lm", rows, None, False) == 10  # 6 + 5 - 1 fed back when decoding
    assert positions_needed("causal_lm", rows, 2, False) == 8  # the longest training sequence


def test_echo_input_on_a_task_with_uneven_sides_is_exit_2_before_any_run_dir(tmp_path, capsys):
    """data.echo_input needs one target token per input token: histogram's spaced counts in char
    tokens are two per letter, which is one line naming the record, and nothing on disk."""
    out = tmp_path / "runs"
    raw = tiny(name="echo", data={"task": "histogram", "options": {"min_len": 2, "max_len": 4, "alphabet": "abc"},
                                  "echo_input": True}, tokenizer={"kind": "char"})
    assert main(["train", write(tmp_path, raw), "--out", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "data.echo_input pairs input token j with target token j, but record 0 has" in line
    assert line.endswith("or set data.echo_input=false")
    assert not out.exists() or not any(out.rglob("*"))
