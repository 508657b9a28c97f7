"""The plugin proof: examples/scaled_attention.py registers a variant and a task in one file, and
every command takes it (train, sample, eval, attn, trace, plot, compare, bench; ppo in tests/rl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from t5lab.cli import main
from tests.train.conftest import tiny

EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "scaled_attention.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny scaled_t5 runs (a sweep over the attention scale) on swap_halves."""
    root = tmp_path_factory.mktemp("plugin")
    raw = tiny(name="scaled", model={"variant": "scaled_t5", "options": {"attention_scale": [0.5, 2.0]}},
               data={"task": "swap_halves", "options": {"min_half": 1, "max_half": 2, "alphabet": "abc"}},
               train={"max_steps": 4})
    config = root / "scaled.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["--import", EXAMPLE, "train", str(config), "--out", str(root / "runs"), "--no-progress"]) == 0
    found = sorted((root / "runs").glob("scaled-*/*/DONE"))
    assert len(found) == 2
    return root, [d.parent for d in found]


@pytest.mark.slow
def test_every_command_takes_the_plugin_variant(runs, capsys):
    from t5lab.variants import get_variant, variant_of

    root, (run, other) = runs
    assert variant_of(run) is get_variant("scaled_t5")
    assert variant_of(run / "model") is get_variant("scaled_t5")  # from config.json's model_type
    capsys.readouterr()
    commands = [
        ["sample", str(run), "--prompt", "abca", "--max-new-tokens", "4"],
        ["eval", str(run), "--split", "val", "--verify"],
        ["attn", str(run), "--text", "ab", "--out", str(root / "attn")],
        ["trace", str(run / "model"), "--text", "ab", "--max-new-tokens", "2"],
        ["plot", str(run), "--out", str(root / "m.png")],
        ["compare", str(run), str(other), "--out", str(root / "c.png"), "--no-measure"],
    ]
    for argv in commands:
        code = main(["--import", EXAMPLE, *argv])
        out = capsys.readouterr()
        assert code == 0, (argv, out.err[-2000:])
    assert list((root / "attn").glob("*.png")) and (root / "m.png").is_file() and (root / "c.png").is_file()


@pytest.mark.slow
def test_bench_takes_the_plugin_variant(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--import", EXAMPLE, "bench", "lm_training", "--shape", "tiny", "--repeats", "1",
            "--variants", "scaled_t5", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["candidate"], r["reference"]) for r in rows] == [("scaled_t5", "hf_t5")]
    assert main(["bench", "lm_training", "--variants", "gpt2"]) == 2  # not a T5-family LM: one line
    assert capsys.readouterr().err.strip().startswith("error: --variants: bench LM candidate 'gpt2'")


@pytest.mark.slow
def test_ppo_trains_the_plugin_value_head(runs, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    _, (run, _) = runs
    cfg = {
        "name": "scaled_ppo",
        "policy": {"init": str(run)},
        "prompts": {"task": "swap_halves", "options": {"min_half": 1, "max_half": 2, "alphabet": "abc"}, "n": 16},
        "reward": {"fn": "accuracy"},
        "ppo": {"batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 4},
        "steps": 2,
        "save_every": 2,
        "samples_every": 2,
    }
    config = tmp_path / "ppo.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "runs"
    assert main(["--import", EXAMPLE, "ppo", str(config), "--out", str(out), "--quiet"]) == 0
    [done] = list(out.glob("scaled_ppo/*/DONE"))
    policy = AutoModelForSeq2SeqLM.from_pretrained(done.parent / "model")
    assert type(policy).__name__ == "ScaledT5WithValueHead" and policy.config.model_type == "scaled_t5_with_value_head"
