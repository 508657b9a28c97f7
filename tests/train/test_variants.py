"""Every registered variant trains a few steps on a task of its kind; model/ reloads through the
Auto classes and reproduces the logged validation loss."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

import t5lab  # noqa: F401  (registers the variants with the Auto classes)
from t5lab.config import load_config
from t5lab.formulation import Formulation, classification_loss, token_loss
from t5lab.tasks import build_splits, get_task
from t5lab.train.run import train
from tests.train.conftest import tiny

AUTO = {
    "seq2seq": AutoModelForSeq2SeqLM,
    "causal_lm": AutoModelForCausalLM,
    "prefix_lm": AutoModelForCausalLM,
    "classification": AutoModelForSequenceClassification,
}
TEXT = {"task": "botchan", "options": {}, "train": 24, "val": 8, "test": 8, "max_length": 24}

CASES = {
    "t5-copy": dict(model={"variant": "t5"}),
    "pseudo_dec-copy": dict(model={"variant": "pseudo_dec"}),
    "decoder_only-copy": dict(model={"variant": "decoder_only"}),
    "decoder_only-prefix-copy": dict(model={"variant": "decoder_only", "options": {"prefix_lm": True}}),
    "gpt2-copy": dict(model={"variant": "gpt2"}),
    "enct5-parity": dict(
        model={"variant": "enct5"}, data={"task": "parity", "options": {"min_len": 2, "max_len": 6}}
    ),
    "gpt2-text-causal-all": dict(model={"variant": "gpt2"}, data={**TEXT, "loss_on": "all"}),
    "t5-text-span": dict(model={"variant": "t5"}, data={**TEXT, "objective": "span_corruption"}),
    "decoder_only-text-prefix": dict(
        model={"variant": "decoder_only", "options": {"prefix_lm": True}}, data=TEXT, tokenizer="byte"
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_variant_trains_and_reloads(case, tmp_path):
    raw = tiny(name=case, train={"max_steps": 3}, **CASES[case])
    [result] = train(raw, out=tmp_path)
    d = result.run_dir
    done = json.loads((d / "DONE").read_text())
    assert done["step"] == 3
    metrics = done["metrics"]
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())

    cfg = load_config(d / "config.yaml")
    tok = AutoTokenizer.from_pretrained(d / "model")
    task = get_task(cfg.data.task, **cfg.data.options)
    f = Formulation.from_config(cfg, tok, task)
    model = AUTO[f.kind].from_pretrained(d / "model").eval()
    batch = f.collate(f.encode_all(build_splits(cfg.data)["val"]))
    with torch.no_grad():
        logits = model(**batch).logits
    if f.kind == "classification":
        loss_sum, n, _ = classification_loss(logits, batch["labels"], f.problem_type)
    else:
        loss_sum, n, _ = token_loss(f.kind, logits, batch["labels"])
        assert "val_exact_match" in metrics and "test_ppl" in metrics
    assert metrics["val_loss"] == pytest.approx((loss_sum / n).item(), rel=1e-4)


def test_user_registered_variant(tmp_path):
    """A variant registered from outside t5lab trains through the same path."""
    from transformers import T5Config, T5ForConditionalGeneration

    from t5lab.models.registry import _REGISTRY, register_model, t5_config_kwargs

    calls = []

    @register_model("test_tiny_t5", objective="seq2seq")
    def build(cfg, info):
        calls.append(info.vocab_size)
        return T5ForConditionalGeneration(T5Config(**t5_config_kwargs(cfg, info)))

    try:
        [result] = train(tiny(model={"variant": "test_tiny_t5"}, train={"max_steps": 2}), out=tmp_path)
        assert calls and (result.run_dir / "DONE").exists()
    finally:
        _REGISTRY.pop("test_tiny_t5")
