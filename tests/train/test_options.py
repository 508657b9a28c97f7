"""Optimiser schedules against closed forms; init_from with a LoadReport; loggers; early stopping."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from t5lab.train.run import train
from tests.train.conftest import tiny


def _lrs(run_dir):
    return {int(r["step"]): float(r["lr"]) for r in csv.DictReader(open(run_dir / "metrics.csv")) if r["lr"]}


def _expected(schedule, i, lr=1e-2, warmup=2, total=6):
    """lr of the (i+1)-th optimiser step (i steps done), HF get_*_schedule_with_warmup formulas."""
    if schedule == "constant":
        return lr * min(1.0, i / warmup)
    if i < warmup:
        return lr * i / warmup
    progress = (i - warmup) / (total - warmup)
    if schedule == "linear":
        return lr * max(0.0, 1 - progress)
    return lr * 0.5 * (1 + math.cos(math.pi * progress))  # cosine, half a cycle


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_schedule_matches_closed_form(schedule, tmp_path):
    raw = tiny(name=schedule, train={"max_steps": 6, "lr": 1e-2, "warmup_steps": 2, "schedule": schedule,
                                     "log_every_n_steps": 1})
    [result] = train(raw, out=tmp_path)
    lrs = _lrs(result.run_dir)
    assert sorted(lrs) == [1, 2, 3, 4, 5, 6]
    for step, lr in lrs.items():
        assert lr == pytest.approx(_expected(schedule, step - 1), abs=1e-9), step


def test_cyclic_and_plateau_and_adafactor_run(tmp_path):
    [cyc] = train(tiny(name="cyc", train={"max_steps": 4, "schedule": "cyclic", "cyclic_steps": 2, "lr": 1e-2,
                                          "log_every_n_steps": 1}), out=tmp_path)
    lrs = _lrs(cyc.run_dir)  # triangular: lr/10 at step 0, lr after cyclic_steps, back down
    assert lrs[1] == pytest.approx(1e-3) and lrs[3] == pytest.approx(1e-2) and lrs[4] < 1e-2
    [plat] = train(tiny(name="plat", train={"max_steps": 12, "schedule": "plateau", "optimizer": "adafactor"}),
                   out=tmp_path)
    assert (plat.run_dir / "DONE").exists()


def test_init_from_checkpoint_prints_load_report(tmp_path, capsys):
    torch.manual_seed(0)
    src = T5ForConditionalGeneration(T5Config(vocab_size=200, d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=1,
                                              relative_attention_num_buckets=8, decoder_start_token_id=0))
    src.save_pretrained(tmp_path / "ckpt")
    raw = tiny(name="init", model={"variant": "decoder_only", "init_from": str(tmp_path / "ckpt"), "resize_embeddings": True},
               train={"max_steps": 2})
    [result] = train(raw, out=tmp_path / "runs")
    out = capsys.readouterr().out
    assert "loaded weights from" in out and "new (randomly initialised)" in out
    assert "embeddings resized from 200 to" in out  # the vocabulary differs: said, since resize_embeddings=true
    assert (result.run_dir / "DONE").exists()


def test_tensorboard_logger_and_early_stop(tmp_path):
    raw = tiny(name="tb", log={"tensorboard": True},
               train={"max_steps": 60, "early_stop": {"monitor": "val_loss", "patience": 0, "min_delta": 10.0}})
    [result] = train(raw, out=tmp_path)
    assert list((result.run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    # min_delta=10 means no validation can count as an improvement: stops after the 2nd validation
    rows = [r for r in csv.DictReader(open(result.run_dir / "metrics.csv")) if r["val_loss"]]
    assert int(rows[-1]["step"]) < 60


def test_word_tokenizer_run_takes_its_words_from_the_training_split_only(tmp_path):
    """tokenizer: word learns whole numbers from the training split (a held-out word is spelled, never
    looked up), and the saved run model reloads with that tokenizer."""
    from t5lab.config import validate
    from t5lab.plan import resolve
    from t5lab.tasks import build_splits
    from t5lab.tokenizers import load_tokenizer

    data = {"task": "numbersort", "options": {"min_len": 1, "max_len": 3, "min_value": 10, "max_value": 99},
            "train": 40, "val": 8, "test": 8, "max_length": 8, "seed": 0}
    [result] = train(tiny(data=data, tokenizer={"kind": "word", "min_frequency": 1}), [], out=tmp_path, progress=False)
    tok = load_tokenizer(result.run_dir / "model")
    plan = resolve(validate(tiny(data=data)))
    splits = build_splits(plan.task, 40, 8, 8, 0)
    seen = {w for r in splits["train"] for t in (r.input, r.target) for w in t.split()}
    held_out = {w for s in ("val", "test") for r in splits[s] for w in r.input.split()} - seen
    vocab = tok.get_vocab()
    assert seen and all("\u2581" + w in vocab for w in seen)
    assert held_out and not any("\u2581" + w in vocab for w in held_out)
    for word in held_out:
        assert tok.tokenize(word) == ["\u2581" + word[0], word[1]]
    assert "test_exact_match" in result.metrics


@pytest.mark.slow
def test_echo_input_run_scores_the_outputs_as_a_recount_from_the_saved_model(tmp_path):
    """data.echo_input with decoder_only target_positions=pairs: the run's test exact match equals
    greedy decodings of the saved model, outputs only (every second token), against the task's
    own targets."""
    from transformers import AutoModelForCausalLM

    from t5lab.config import validate
    from t5lab.formulation import Formulation
    from t5lab.plan import resolve
    from t5lab.tasks import build_splits
    from t5lab.tokenizers import load_tokenizer

    model = {"variant": "decoder_only", "num_layers": 2,
             "options": {"prefix_lm": True, "position_encoding": "absolute", "target_positions": "pairs"}}
    data = {"task": "reverse", "options": {"min_len": 2, "max_len": 6, "alphabet": "abcd"}, "echo_input": True,
            "train": 200, "val": 16, "test": 16, "max_length": 16, "seed": 0}
    raw = tiny(model=model, data=data, tokenizer={"kind": "char"},
               train={"max_steps": 400, "lr": 1e-2, "batch_size": 16})
    [result] = train(raw, out=tmp_path, progress=False)
    tok = load_tokenizer(result.run_dir / "model")
    saved = AutoModelForCausalLM.from_pretrained(result.run_dir / "model").eval()
    plan = resolve(validate(raw))
    test = build_splits(plan.task, 200, 16, 16, 0)["test"]
    form = Formulation("prefix_lm", tok, max_length=16, echo_input=True)
    examples = form.encode_all(test)
    assert all(len(e.target) == 2 * len(tok(r.input, add_special_tokens=False)["input_ids"]) + 1
               for e, r in zip(examples, test))
    exact = 0
    for example, record in zip(examples, test):
        prompt = form.collate_prompts([example])
        out = saved.generate(**prompt, max_new_tokens=len(example.target), do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[0, prompt["input_ids"].shape[1]:].tolist()
        exact += tok.eos_token_id in new and form.decode(new) == record.target
    assert result.metrics["test_exact_match"] == pytest.approx(exact / len(test))
    assert 0 < exact < len(test)  # 400 steps learn some of these strings, not all: not 0 == 0 or 1 == 1
