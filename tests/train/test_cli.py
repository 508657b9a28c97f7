"""`t5lab train` from the command line: bad input exits 2 before any run dir; sweeps; NaN stops."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from t5lab.cli import main
from tests.train.conftest import tiny


def write(tmp_path, raw, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


BAD_OVERRIDES = [
    (["train.lrr=1"], "train.lrr"),
    (["model.d_model=big"], "model.d_model"),
    (["model.variant=nope"], "model.variant"),
    (["model.variant=enct5"], "model.variant=enct5"),
    (["train.precision=16-mixed"], "train.precision=16-mixed"),  # needs a GPU
    (["trainer.accelerator=gpu"], "trainer.accelerator=gpu"),  # no GPU here
    (["trainer.strategy=deepspeed"], "deepspeed"),
    (["trainer.strategy=fsdp"], "trainer.strategy=fsdp"),
    (["data.train=100000", "data.options.max_len=2"], "distinct"),  # more examples than the task has
    (["tokenizer=/no/such/dir"], "tokenizer.kind"),
    (["model.init_from=/no/such/dir"], "model.init_from"),
    (["train.optimizer=sgd"], "train.optimizer"),
    (["noequals"], "unexpected argument"),
]


@pytest.mark.parametrize("overrides,needle", BAD_OVERRIDES, ids=[n for _, n in BAD_OVERRIDES])
def test_bad_input_exits_2_with_one_line_and_no_run_dir(tmp_path, capsys, overrides, needle):
    config = write(tmp_path, tiny())
    out = tmp_path / "runs"
    code = main(["train", config, *overrides, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and needle in err
    assert len(err.splitlines()) == 1, err
    assert not out.exists(), "a run directory was created for a bad config"


def test_missing_logger_package_is_a_config_error(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    out = tmp_path / "runs"
    assert main(["train", write(tmp_path, tiny()), "log.wandb=true", "--out", str(out)]) == 2
    assert "pip install wandb" in capsys.readouterr().err and not out.exists()


def test_cli_subprocess_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "t5lab.cli", "train", "train.batch_size=0", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: config key train.batch_size")
    assert not (tmp_path / "r").exists()


def test_sweep_runs_each_point_and_skips_finished_ones(tmp_path, capsys):
    raw = tiny(name="sw", train={"max_steps": 2, "lr": [1e-3, 2e-3]})
    config = write(tmp_path, raw)
    out = tmp_path / "runs"
    assert main(["sweep", config, "--out", str(out), "--no-progress"]) == 0
    dirs = sorted(p.parent.parent.name for p in out.glob("*/*/DONE"))
    assert dirs == ["sw-lr=0.001", "sw-lr=0.002"]
    # each point's config.yaml holds its own value
    lrs = sorted(yaml.safe_load(p.read_text())["train"]["lr"] for p in out.glob("*/*/config.yaml"))
    assert lrs == [1e-3, 2e-3]
    capsys.readouterr()
    assert main(["train", config, "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("skipping: already finished") == 2
    assert len(list(out.glob("*/*/DONE"))) == 2  # nothing new


def test_non_finite_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path, capsys):
    """An absurd lr blows the weights up; the run stops at the first non-finite loss."""
    # epoch = 2 steps, so a good checkpoint exists before the loss explodes
    # (fast path off: where this absurd lr first overflows depends on the exact update arithmetic)
    raw = tiny(name="nan", data={"train": 16, "bucketing": False},
               train={"max_steps": 400, "lr": 1e6, "gradient_clip_val": None, "fused_optimizer": False})
    out = tmp_path / "runs"
    code = main(["train", write(tmp_path, raw), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "non-finite training loss" in err and "--resume" in err and len(err.splitlines()) == 1
    [run] = list(out.glob("nan/*"))
    assert not (run / "DONE").exists()
    import torch

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


def test_resume_refuses_finished_run(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", write(tmp_path, tiny(train={"max_steps": 1})), "--out", str(out), "--no-progress"]) == 0
    [run] = list(out.glob("*/*"))
    json.loads((run / "DONE").read_text())
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    assert "already finished" in capsys.readouterr().err
