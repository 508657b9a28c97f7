"""`t5lab ppo`: run directory contents, resume, rewards by import path, one-line config errors."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from transformers import T5Config, T5ForConditionalGeneration

from t5lab.cli import main
from tests.conftest import TINY_T5


@pytest.fixture
def policy_dir(tmp_path):
    from t5lab.tokenizers import build_tokenizer

    tok = build_tokenizer("char", alphabet="ab")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**{**TINY_T5, "vocab_size": len(tok)}))
    path = tmp_path / "policy"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def config(tmp_path, policy_dir):
    cfg = {
        "name": "tiny_ppo",
        "policy": {"init": str(policy_dir)},
        "prompts": {"task": "copy", "options": {"min_len": 2, "max_len": 5, "alphabet": "ab"}, "n": 64},
        "reward": {"fn": "accuracy"},
        "ppo": {"batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 6,
                "learning_rate": 1e-3},
        "steps": 4,
        "save_every": 2,
        "samples_every": 2,
    }
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _run_dir(out):
    (run,) = [p for p in (out / "tiny_ppo").iterdir() if p.is_dir()]
    return run


@pytest.mark.slow
def test_ppo_cli_writes_a_complete_run_dir(config, tmp_path, capsys):
    from transformers import AutoModelForSeq2SeqLM

    import t5lab  # noqa: F401

    out = tmp_path / "runs"
    assert main(["ppo", str(config), "steps=3", "--out", str(out), "--quiet"]) == 0
    run = _run_dir(out)
    assert (run / "DONE").exists() and (run / "samples.txt").exists()
    rows = _rows(run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    for key in ("reward_mean", "reward_std", "kl", "entropy", "clip_frac", "value_loss", "response_length", "beta"):
        assert all(r[key] != "" for r in rows), key
    assert yaml.safe_load((run / "config.yaml").read_text())["ppo"]["kl_estimator"] == "exact"  # resolved
    model = AutoModelForSeq2SeqLM.from_pretrained(run / "model")
    assert type(model).__name__ == "T5HeadWithValueModel"
    ckpt = AutoModelForSeq2SeqLM.from_pretrained(run / "checkpoints" / "last" / "model")
    for (name, a), b in zip(model.state_dict().items(), ckpt.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert "run directory:" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_after_interruption_equals_uninterrupted(config, tmp_path, monkeypatch):
    from t5lab.rl.ppo import PPOTrainer

    full = tmp_path / "full"
    assert main(["ppo", str(config), "--out", str(full), "--quiet"]) == 0
    reference = _rows(_run_dir(full))

    real_step = PPOTrainer.step

    def crashing_step(self, *args, **kwargs):
        if self.step_count == 3:  # after the step-2 checkpoint and one more logged step
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    part = tmp_path / "part"
    monkeypatch.setattr(PPOTrainer, "step", crashing_step)
    assert main(["ppo", str(config), "--out", str(part), "--quiet"]) == 130
    monkeypatch.setattr(PPOTrainer, "step", real_step)
    run = _run_dir(part)
    assert not (run / "DONE").exists() and len(_rows(run)) == 3
    assert main(["ppo", "--resume", str(run), "--quiet"]) == 0
    resumed = _rows(run)
    assert len(resumed) == 4
    for a, b in zip(resumed, reference):
        for key in ("reward_mean", "kl", "value_loss", "policy_loss", "entropy"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-7), (a["step"], key)


@pytest.mark.slow
def test_reward_from_a_file_path(config, tmp_path):
    reward_py = tmp_path / "my_reward.py"
    reward_py.write_text("def count_b(prompts, responses):\n    return [r.count('b') / 8 for r in responses]\n")
    out = tmp_path / "runs"
    rc = main(["ppo", str(config), f"reward.fn={reward_py}:count_b", "steps=1", "--out", str(out), "--quiet"])
    assert rc == 0
    assert len(_rows(_run_dir(out))) == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("ppo.batch_size=abc", "ppo.batch_size"),
        ("ppo.kl_estimator=k2", "kl_estimator"),
        ("ppo.top_p=2", "ppo.top_p"),
        ("ppo.mini_batch_size=3", "mini_batch_size"),
        ("ppo.lr=0.1", "unknown key ppo.lr"),
        ("stepz=3", "stepz"),
        ("steps=0", "steps"),
        ("reward.fn=nowhere_module:fn", "nowhere_module"),
        ("reward.fn=missing.py:fn", "missing.py"),
        ("policy.init=/nonexistent/dir", "no model found"),
        ("prompts.file=/nonexistent.txt", "prompts"),
    ],
)
def test_bad_config_is_a_one_line_error_with_exit_2(config, tmp_path, capsys, override, message):
    out = tmp_path / "runs"
    rc = main(["ppo", str(config), override, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (out / "tiny_ppo").exists() or not any((out / "tiny_ppo").iterdir())  # nothing half-written


def test_missing_config_file_and_missing_section(tmp_path, capsys):
    assert main(["ppo", str(tmp_path / "nope.yaml")]) == 2
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: x\n")
    assert main(["ppo", str(bare)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "policy" in err[1]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["decoder_only", "pseudo_dec"])
def test_ppo_cli_runs_the_other_variants(config, tmp_path, variant):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    import t5lab  # noqa: F401
    from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM
    from t5lab.models.pseudo_decoder import T5PseudoDecConfig, T5PseudoDecForConditionalGeneration
    from t5lab.tokenizers import build_tokenizer

    tok = build_tokenizer("char", alphabet="ab")
    cfg = {**TINY_T5, "vocab_size": len(tok)}
    torch.manual_seed(0)
    if variant == "decoder_only":
        cfg.pop("num_decoder_layers")
        model = T5DecoderOnlyForCausalLM(T5DecoderOnlyConfig(**cfg, prefix_lm=True))
    else:
        model = T5PseudoDecForConditionalGeneration(T5PseudoDecConfig(**cfg))
    path = tmp_path / variant
    model.save_pretrained(path)
    tok.save_pretrained(path)
    out = tmp_path / "runs"
    assert main(["ppo", str(config), f"policy.init={path}", "steps=2", "--out", str(out), "--quiet"]) == 0
    run = _run_dir(out)
    auto = AutoModelForCausalLM if variant == "decoder_only" else AutoModelForSeq2SeqLM
    loaded = auto.from_pretrained(run / "model")
    assert hasattr(loaded, "v_head") and len(_rows(run)) == 2
