"""`t5lab grpo | rloo | dpo | rl`: run directories, resume == uninterrupted, one-line errors (exit 2)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from t5lab.cli import main
from tests.conftest import TINY_T5

TASK = {"task": "copy", "options": {"min_len": 2, "max_len": 5, "alphabet": "ab"}, "n": 64}


def _save(model, tok, path):
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def tok():
    from t5lab.tokenizers import build_tokenizer

    return build_tokenizer("char", alphabet="ab")


@pytest.fixture
def policy_dir(tmp_path, tok):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return _save(T5ForConditionalGeneration(T5Config(**{**TINY_T5, "vocab_size": len(tok)})), tok, tmp_path / "policy")


def _variant_dir(tmp_path, tok, variant):
    from transformers import GPT2Config, GPT2LMHeadModel

    from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM
    from t5lab.models.pseudo_decoder import T5PseudoDecConfig, T5PseudoDecForConditionalGeneration

    cfg = {**TINY_T5, "vocab_size": len(tok)}
    torch.manual_seed(0)
    if variant == "pseudo_dec":
        model = T5PseudoDecForConditionalGeneration(T5PseudoDecConfig(**cfg))
    elif variant == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                           eos_token_id=1, pad_token_id=0, bos_token_id=1))
    else:
        cfg.pop("num_decoder_layers")
        model = T5DecoderOnlyForCausalLM(T5DecoderOnlyConfig(**cfg, prefix_lm=variant == "prefix_lm"))
    return _save(model, tok, tmp_path / variant)


def _config(tmp_path, policy_dir, algo, **extra):
    cfg = {"name": f"tiny_{algo}", "algo": algo, "policy": {"init": str(policy_dir)}, "steps": 4, "save_every": 2,
           "samples_every": 2}
    if algo in ("grpo", "rloo"):
        cfg.update(prompts=TASK, reward={"fn": "accuracy"},
                   **{algo: {"batch_size": 2, "group_size": 3, "mini_batch_size": 3, "max_new_tokens": 6,
                             "learning_rate": 1e-3, "epochs": 2}})
    else:
        cfg.update(prompts=TASK, reward={"fn": "accuracy"}, pairs={"k": 3, "max_new_tokens": 6},
                   dpo={"batch_size": 2, "learning_rate": 1e-3})
    cfg.update(extra)
    path = tmp_path / f"{algo}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _run_dir(out, algo):
    (run,) = [p for p in (out / f"tiny_{algo}").iterdir() if p.is_dir()]
    return run


@pytest.mark.parametrize("algo", ["grpo", "rloo", "dpo"])
def test_cli_writes_a_complete_run_dir(tmp_path, policy_dir, algo):
    from transformers import AutoModelForSeq2SeqLM

    out = tmp_path / "runs"
    cfg = _config(tmp_path, policy_dir, algo, eval={"n": 8, "every": 2, "max_new_tokens": 6})
    assert main([algo, str(cfg), "steps=3", "--out", str(out), "--quiet"]) == 0
    run = _run_dir(out, algo)
    assert (run / "DONE").exists() and (run / "samples.txt").exists()
    rows = _rows(run)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]  # step 0: the evaluation before training
    assert rows[0]["eval_reward"] != "" and rows[3]["eval_reward"] != ""
    keys = ("loss", "reward_margin", "reward_accuracy") if algo == "dpo" else ("reward_mean", "kl", "entropy")
    for key in (*keys, "wall_s"):
        assert all(r[key] != "" for r in rows[1:]), key
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["algo"] == algo and "seed" in saved[algo]  # resolved: every default written out
    AutoModelForSeq2SeqLM.from_pretrained(run / "model")
    assert (run / "checkpoints" / "last" / "trainer_state.pt").exists()
    assert (run / "reward.png").stat().st_size > 0  # drawn at the end of every run
    from t5lab.rl.run import plot_comparison

    png = plot_comparison({algo: run, "again": out / f"tiny_{algo}"}, tmp_path / "cmp.png")
    assert png.stat().st_size > 0
    if algo == "dpo":
        assert (run / "ref_logprobs.safetensors").exists()
        pairs = [json.loads(line) for line in (run / "pairs.jsonl").read_text().splitlines()]
        assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)


@pytest.mark.parametrize("variant", ["pseudo_dec", "decoder_only", "prefix_lm", "gpt2"])
@pytest.mark.parametrize("algo", ["grpo", "rloo", "dpo"])
def test_cli_runs_every_variant(tmp_path, tok, algo, variant):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    import t5lab  # noqa: F401

    path = _variant_dir(tmp_path, tok, variant)
    out = tmp_path / "runs"
    assert main([algo, str(_config(tmp_path, path, algo)), "steps=1", "--out", str(out), "--quiet"]) == 0
    run = _run_dir(out, algo)
    auto = AutoModelForSeq2SeqLM if variant == "pseudo_dec" else AutoModelForCausalLM
    assert type(auto.from_pretrained(run / "model")).__name__ == type(auto.from_pretrained(path)).__name__


@pytest.mark.parametrize("algo", ["grpo", "rloo", "dpo"])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, policy_dir, monkeypatch, algo):
    from t5lab.rl.dpo import DPOTrainer
    from t5lab.rl.group import GroupTrainer

    cfg = _config(tmp_path, policy_dir, algo)
    full = tmp_path / "full"
    assert main([algo, str(cfg), "--out", str(full), "--quiet"]) == 0
    reference = _rows(_run_dir(full, algo))

    cls = DPOTrainer if algo == "dpo" else GroupTrainer
    real_step = cls.step

    def crashing_step(self, *args, **kwargs):
        if self.step_count == 3:  # after the step-2 checkpoint and one more logged step
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    part = tmp_path / "part"
    monkeypatch.setattr(cls, "step", crashing_step)
    assert main([algo, str(cfg), "--out", str(part), "--quiet"]) == 130
    monkeypatch.setattr(cls, "step", real_step)
    run = _run_dir(part, algo)
    assert not (run / "DONE").exists() and len(_rows(run)) == 3
    if algo == "dpo":  # the reference log-probs are read back from the run dir, not recomputed

        def no_reference(*args, **kwargs):
            raise AssertionError("the reference model ran again on resume")

        monkeypatch.setattr(DPOTrainer, "reference_logprobs", no_reference)
    assert main([algo, "--resume", str(run), "--quiet"]) == 0
    resumed = _rows(run)
    assert len(resumed) == 4
    keys = ("loss", "reward_margin", "logp_chosen") if algo == "dpo" else ("reward_mean", "kl", "loss", "entropy")
    for a, b in zip(resumed, reference):
        for key in keys:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-7), (a["step"], key)


def test_rl_command_reads_algo_and_runs_ppo_too(tmp_path, policy_dir):
    out = tmp_path / "runs"
    cfg = _config(tmp_path, policy_dir, "grpo")
    assert main(["rl", str(cfg), "steps=1", "--out", str(out), "--quiet"]) == 0
    ppo = {"name": "tiny_ppo", "algo": "ppo", "policy": {"init": str(policy_dir)}, "prompts": TASK,
           "reward": {"fn": "accuracy"}, "ppo": {"batch_size": 2, "mini_batch_size": 2, "max_new_tokens": 4},
           "steps": 1}
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(ppo))
    assert main(["rl", str(path), "--out", str(out), "--quiet"]) == 0
    assert (_run_dir(out, "ppo") / "DONE").exists()


@pytest.mark.parametrize(
    "algo, override, message",
    [
        ("grpo", "grpo.group_size=1", "grpo.group_size"),
        ("rloo", "rloo.group_size=1", "rloo.group_size"),
        ("grpo", "grpo.loss_norm=mean", "grpo.loss_norm"),
        ("grpo", "grpo.lr=0.1", "unknown key grpo.lr"),
        ("grpo", "rloo.cliprange=0.2", "config key rloo"),
        ("rloo", "stepz=3", "stepz"),
        ("grpo", "algo=rloo", "t5lab rloo"),
        ("dpo", "dpo.loss_type=hinge", "dpo.loss_type"),
        ("dpo", "pairs.k=1", "pairs.k"),
        ("dpo", "reward.fn=nowhere_module:fn", "nowhere_module"),
        ("grpo", "policy.init=/nonexistent/dir", "no model found"),
    ],
)
def test_bad_config_is_a_one_line_error_with_exit_2(tmp_path, policy_dir, capsys, algo, override, message):
    out = tmp_path / "runs"
    rc = main([algo, str(_config(tmp_path, policy_dir, algo)), override, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (out / f"tiny_{algo}").exists() or not any((out / f"tiny_{algo}").iterdir())


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"prompt": "ab", "chosen": "ab"}], "missing field 'rejected'"),
        ([{"prompt": "", "chosen": "ab", "rejected": "b"}], "empty prompt"),
    ],
)
def test_bad_pairs_file_is_a_one_line_error(tmp_path, policy_dir, capsys, rows, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _config(tmp_path, policy_dir, "dpo")
    rc = main(["dpo", str(cfg), f"pairs.file={pairs}", "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and message in err, err


def test_empty_prompts_file_is_a_one_line_error(tmp_path, policy_dir, capsys):
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n\n")
    cfg = _config(tmp_path, policy_dir, "grpo")
    rc = main(["grpo", str(cfg), f"prompts.file={empty}", "prompts.task=null", "reward.fn=my.py:f",
               "--out", str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "holds no prompts" in err and "\n" not in err, err
