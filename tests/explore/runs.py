"""Run directories for the explorer tests: hand-made (fast) and trained by ``t5lab train`` (slow)."""

from __future__ import annotations

from pathlib import Path

from t5lab.config import load_config, save_config

TINY_OVERRIDES = [
    "model.d_model=32", "model.d_ff=64", "model.d_kv=8", "model.relative_attention_num_buckets=8",
    "data.train=128", "data.val=32", "data.test=0", "data.max_length=12",
    "train.batch_size=32", "train.max_steps=8", "train.warmup_steps=0", "train.log_every_n_steps=2",
    "train.num_samples=1",
]


def hand_made_run(root: Path, name: str, variant: str, val_losses: list[float], steps: list[int]) -> Path:
    """A run directory with a real config, a tiny untrained model and a hand-written metrics.csv."""
    from t5lab.tasks import get_task
    from t5lab.tokenizers import build_tokenizer

    run = root / name / "20260101-000000"
    run.mkdir(parents=True)
    cfg = load_config(None, [f"name={name}", f"model.variant={variant}", *TINY_OVERRIDES])
    save_config(cfg, run / "config.yaml")
    task = get_task(cfg.data.task, **cfg.data.options)
    tokenizer = build_tokenizer("char", alphabet=task.alphabet())
    model = _tiny_model(variant, len(tokenizer))
    model.save_pretrained(run / "model")
    tokenizer.save_pretrained(run / "model")
    lines = ["step,epoch,samples,tokens,train_loss,lr,val_loss"]
    for i, (step, loss) in enumerate(zip(steps, val_losses)):
        lines.append(f"{step},{i},{(step + 1) * 32},{(step + 1) * 300},{loss + 0.1},0.001,")
        lines.append(f"{step},{i},,,,,{loss}")
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    (run / "DONE").write_text("{}\n")
    return run


def _tiny_model(variant: str, vocab: int):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from tests.explore.conftest import T5_KW

    torch.manual_seed(0)
    kw = {**T5_KW, "vocab_size": vocab}
    if variant == "decoder_only":
        from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM

        return T5DecoderOnlyForCausalLM(T5DecoderOnlyConfig(**kw))
    return T5ForConditionalGeneration(T5Config(**kw))


def trained_run(root: Path, variant: str, *extra: str) -> Path:
    """A real run: ``t5lab train`` on the reverse task for a few steps."""
    from t5lab.cli import main

    code = main(["train", "--no-progress", "--out", str(root), f"name=tiny_{variant}", f"model.variant={variant}", *TINY_OVERRIDES, *extra])
    assert code == 0
    return next((root / f"tiny_{variant}").iterdir())
