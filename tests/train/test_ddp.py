"""`trainer.strategy=ddp trainer.devices=2` on CPU (gloo, spawned workers)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import yaml

from tests.train.conftest import tiny


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    # 48 examples, batch 8 per process -> 3 steps per epoch on 2 processes
    raw = tiny(name="ddp", train={"max_steps": 3}, trainer={"strategy": "ddp", "devices": 2})
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "t5lab.cli", "train", str(config), "--out", str(tmp_path / "runs"), "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, timeout=500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [done] = list((tmp_path / "runs").glob("ddp/*/DONE"))
    info = json.loads(done.read_text())
    assert info["step"] == 3
    rows = list(csv.DictReader(open(done.parent / "metrics.csv")))
    # both processes' examples are counted: 2 x 8 per step (logged every 2 steps)
    samples = {int(r["step"]): int(r["samples"]) for r in rows if r["samples"]}
    assert samples == {2: 32}
    assert "val_loss" in info["metrics"] and "test_exact_match" in info["metrics"]
    assert (done.parent / "model" / "model.safetensors").is_file()
