"""`t5lab train` with no arguments: the real quickstart config reaches >= 95 % held-out exact match."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from t5lab.config import load_config
from t5lab.train.run import quickstart_path


def test_quickstart_config_is_valid_and_small():
    cfg = load_config(quickstart_path())
    assert cfg.model.variant == "t5" and cfg.model.d_model <= 64
    assert cfg.trainer.accelerator == "cpu" and cfg.data.test > 0


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    """The README's first command, unchanged (about a minute of one CPU core)."""
    proc = subprocess.run(
        [sys.executable, "-m", "t5lab.cli", "train", "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("run directory: ")
    run = Path(last.removeprefix("run directory: "))
    run = run if run.is_absolute() else tmp_path / run
    metrics = json.loads((run / "DONE").read_text())["metrics"]
    assert metrics["test_exact_match"] >= 0.95, metrics
    assert "prediction:" in proc.stdout  # samples after each validation


def test_every_shipped_config_validates():
    from t5lab.config import load_sweep

    for name in ("quickstart", "variants_sweep", "text_lm", "classify"):  # (rl configs live here too)
        path = quickstart_path().parent / f"{name}.yaml"
        from t5lab.tasks import build_splits

        for cfg, _ in load_sweep(path):
            assert build_splits(cfg.data)["train"], path  # sizes the task can provide
