"""`t5lab ppo` run directories under faults: killed at each write, resumed, equal to one uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket

import pytest
import torch
from safetensors.torch import load_file

from t5lab import rundir
from t5lab.cli import main
from t5lab.rl.run import run_ppo
from tests.conftest import TINY_T5

CONFIG = {
    "name": "ppo_faults",
    "prompts": {"task": "copy", "options": {"min_len": 2, "max_len": 5, "alphabet": "ab"}, "n": 64},
    "reward": {"fn": "accuracy"},
    "ppo": {"batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 6, "learning_rate": 1e-3},
    "steps": 4,
    "save_every": 2,
    "samples_every": 2,
}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    from transformers import T5Config, T5ForConditionalGeneration

    from t5lab.tokenizers import build_tokenizer

    tok = build_tokenizer("char", alphabet="ab")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**{**TINY_T5, "vocab_size": len(tok)}))
    path = tmp_path_factory.mktemp("policy") / "policy"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return {**CONFIG, "policy": {"init": str(path)}}


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    return run_ppo(config, out=tmp_path_factory.mktemp("reference"), progress=False)


def _in_child(fault, fn):
    """Run ``fn`` in a forked process ended by os._exit(137) at ``fault``; assert it was."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ[rundir.FAULT_ENV] = fault
            rundir._fault_counts.clear()
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137, f"T5LAB_FAULT={fault} did not end the run"


def _metrics(run):
    """metrics.csv without ``wall_s`` (training wall time: the one column a rerun cannot repeat)."""
    import csv

    with open(run / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(fh)]


def assert_same_as(run, ref):
    for rel in ("model/model.safetensors", "checkpoints/last/model/model.safetensors"):
        a, b = load_file(ref / rel), load_file(run / rel)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=f"{rel}: {k}")
    assert _metrics(run) == _metrics(ref)
    assert (run / "samples.txt").read_text() == (ref / "samples.txt").read_text()
    assert (run / "DONE").exists()
    stale = [p for p in run.rglob("*") if p.name.endswith((".tmp", ".old")) or rundir._TEMP_DIR.match(p.name) or p.name == rundir.LOCK]
    assert stale == []
    for rel in rundir.read_manifest(run):
        assert rundir.verify(run / rel, run), rel


@pytest.mark.parametrize("fault", ["ppo_ckpt_tmp:2", "ppo_ckpt_swap:1", "metrics:3", "samples:2", "manifest:2", "model_tmp", "done"])
def test_ppo_kill_at_write_point_then_resume_equals_uninterrupted(config, reference, tmp_path, fault):
    out = tmp_path / "runs"
    _in_child(fault, lambda: run_ppo(config, out=out, progress=False))
    [run] = list(out.glob("ppo_faults/*"))
    assert not (run / "DONE").exists()
    run_ppo(resume=run, progress=False)
    assert_same_as(run, reference)


def error_lines(capsys):
    """stderr without transformers' loading bars (PPO loads the policy before it opens the run dir)."""
    text = capsys.readouterr().err
    assert "Traceback" not in text
    return [line for line in text.strip().splitlines() if "it/s]" not in line]


def test_ppo_damaged_checkpoint_is_one_line(config, reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "DONE").unlink()
    weights = run / "checkpoints" / "last" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 1
    weights.write_bytes(bytes(data))
    assert main(["ppo", "--resume", str(run), "--quiet"]) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and "model.safetensors: sha256 does not match" in err[0], err


def test_ppo_second_process_on_a_run_dir_is_refused(config, reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "DONE").unlink()
    (run / rundir.LOCK).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "command": "ppo"}) + "\n")
    assert main(["ppo", "--resume", str(run), "--quiet"]) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and "is in use by ppo" in err[0], err
