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
    # Lightning cannot clip a fused (internally unscaling) optimizer under mixed precision
    (["train.fused_optimizer=true", "train.precision=bf16-mixed", "train.gradient_clip_val=1.0"], "cannot clip"),
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


def test_bf16_mixed_with_clipping_trains(tmp_path):
    # fused_optimizer=auto must not pick fused AdamW here: Lightning's MixedPrecision plugin refuses to
    # clip it (found on an AVX512/AMX CPU, where precision=auto resolves to bf16-mixed)
    config = write(tmp_path, tiny(train={"max_steps": 2}))
    overrides = ["train.precision=bf16-mixed", "train.gradient_clip_val=1.0", "train.val_check_interval=2"]
    assert main(["train", config, *overrides, "--out", str(tmp_path / "runs"), "--no-progress"]) == 0


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


def test_non_finite_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path, capsys, monkeypatch):
    """A NaN injected into the loss at step 3 stops the run; the epoch-end checkpoint (step 2) stays."""
    import torch

    from t5lab.train.module import T5LabModule

    original = T5LabModule._train_loss

    def poisoned(self, batch):
        loss, n = original(self, batch)
        if self.training and self.global_step >= 3:
            loss = loss * float("nan")
        return loss, n

    monkeypatch.setattr(T5LabModule, "_train_loss", poisoned)
    raw = tiny(name="nan", data={"train": 16}, train={"max_steps": 40})  # epoch = 2 steps
    out = tmp_path / "runs"
    code = main(["train", write(tmp_path, raw), "--out", str(out), "--no-progress"])
    line = capsys.readouterr().err.strip().splitlines()[-1]  # (Lightning's INFO lines come before it)
    assert code == 2
    assert line.startswith("error: non-finite training loss (nan) at step 3") and "--resume" in line
    [run] = list(out.glob("nan/*"))
    assert not (run / "DONE").exists()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


def test_deferred_non_finite_check_never_reaches_a_checkpoint(tmp_path, capsys, monkeypatch):
    """The CUDA mode (no host read per step; T5LabModule._check_now is False there) simulated on CPU:
    a NaN at step 2, with no logging step before the epoch ends, is caught at the epoch end, before
    ModelCheckpoint writes last.ckpt, which stays the finite step-2 checkpoint."""
    import torch

    from t5lab.train.module import T5LabModule

    original = T5LabModule._train_loss

    def poisoned(self, batch):
        loss, n = original(self, batch)
        if self.training and self.global_step == 2:
            loss = loss * float("nan")
        return loss, n

    monkeypatch.setattr(T5LabModule, "_train_loss", poisoned)
    monkeypatch.setattr(T5LabModule, "_check_now", lambda self: False)
    raw = tiny(name="nan", data={"train": 16}, train={"max_steps": 40, "log_every_n_steps": 50})  # epoch = 2 steps
    out = tmp_path / "runs"
    code = main(["train", write(tmp_path, raw), "--out", str(out), "--no-progress"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert line.startswith("error: non-finite training loss at step 4") and "checked every log_every_n_steps" in line
    [run] = list(out.glob("nan/*"))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


def test_absurd_learning_rate_never_writes_non_finite_weights(tmp_path, capsys):
    """lr=1e6: either the loss turns non-finite (the run stops, exit 2) or the run ends; in both
    cases every saved tensor is finite."""
    import torch

    raw = tiny(name="lr", data={"train": 16}, train={"max_steps": 60, "lr": 1e6, "gradient_clip_val": None})
    code = main(["train", write(tmp_path, raw), "--out", str(tmp_path / "runs"), "--no-progress"])
    assert code in (0, 2)
    if code == 2:
        assert "non-finite training loss" in capsys.readouterr().err
    [ckpt] = list((tmp_path / "runs").glob("lr/*/checkpoints/last.ckpt"))
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values())


def test_resume_refuses_finished_run(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", write(tmp_path, tiny(train={"max_steps": 1})), "--out", str(out), "--no-progress"]) == 0
    [run] = list(out.glob("*/*"))
    json.loads((run / "DONE").read_text())
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    assert "already finished" in capsys.readouterr().err
