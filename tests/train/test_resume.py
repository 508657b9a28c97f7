"""kill -9 mid-training, `t5lab train --resume`, and the final weights equal an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from t5lab.cli import main
from t5lab.train.run import train
from tests.train.conftest import tiny

# dropout and a linear schedule, so that RNG and scheduler state both have to survive the restart
RAW = tiny(
    name="resume",
    model={"dropout": 0.1},
    train={"max_steps": 90, "schedule": "linear", "warmup_steps": 5, "lr": 3e-3, "log_every_n_steps": 3},
)


@pytest.mark.slow
def test_resume_after_kill_9_equals_uninterrupted(tmp_path):
    [reference] = train(RAW, out=tmp_path / "ref")

    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(RAW))
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "t5lab.cli", "train", str(config), "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.time() + 300
        while not list(out.glob("resume/*/checkpoints/last.ckpt")):
            assert proc.poll() is None, "training process ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        time.sleep(0.3)  # into the next epoch: the steps after the checkpoint are lost
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    [run] = list(out.glob("resume/*"))
    assert not (run / "DONE").exists(), "the run finished before it was killed; make it longer"
    killed_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < killed_at < 90
    print(f"killed after step {killed_at}")

    assert main(["train", "--resume", str(run), "--no-progress"]) == 0

    a = load_file(reference.run_dir / "model" / "model.safetensors")
    b = load_file(run / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    ma = json.loads((reference.run_dir / "DONE").read_text())["metrics"]
    mb = json.loads((run / "DONE").read_text())["metrics"]
    assert mb == ma
    # metrics.csv continues where the checkpoint left off: one row per step, same training losses
    import csv

    rows_a = {r["step"]: r["train_loss"] for r in csv.DictReader(open(reference.run_dir / "metrics.csv")) if r["train_loss"]}
    rows_b = {r["step"]: r["train_loss"] for r in csv.DictReader(open(run / "metrics.csv")) if r["train_loss"]}
    assert rows_b == rows_a
