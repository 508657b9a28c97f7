"""A two-point study end to end, its report rebuilt, and a killed study resumed == an uninterrupted one."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from t5lab.cli import main
from t5lab.study.runner import run_study
from tests.study.conftest import tiny_study


def finished(root):
    return sorted(root.glob("runs/*/*/DONE"))


def test_two_point_study_end_to_end(tmp_path, capsys):
    study = tiny_study(seeds=2, match="params")
    root = run_study(study, out=tmp_path)
    assert root == tmp_path / "tiny"
    assert len(finished(root)) == 4
    for name in ("report.md", "results.csv", "plan.json", "study.yaml", "heatmap.png", "curves_all.png", "bars_all.png"):
        assert (root / name).is_file(), name
    rows = list(csv.DictReader(open(root / "results.csv")))
    assert [r["point"] for r in rows] == ["variant=encdec", "variant=causal"]
    assert all(r["runs"] == "2" for r in rows)
    # the CSV's means are the means of the runs' own DONE metrics
    for row in rows:
        dones = [json.loads(p.read_text())["metrics"] for p in root.glob(f"runs/tiny-{row['point']}-seed=*/*/DONE")]
        want = sum(d["test_loss"] for d in dones) / 2
        assert float(row["test_loss_mean"]) == pytest.approx(want, rel=1e-5)
        assert float(row["test_loss_ci_low"]) < float(row["test_loss_mean"]) < float(row["test_loss_ci_high"])
    params = [int(r["params"]) for r in rows]
    assert abs(params[1] - params[0]) <= 0.05 * params[0]
    report = (root / "report.md").read_text()
    assert "encdec" in report and "(Welch, n=2 vs 2)" in report and "![heatmap](heatmap.png)" in report

    # --report rebuilds the same numbers from the runs alone
    before = (root / "results.csv").read_text()
    (root / "results.csv").unlink()
    assert main(["study", "--report", str(root)]) == 0
    assert (root / "results.csv").read_text() == before

    # a second run of the same study trains nothing
    capsys.readouterr()
    run_study(study, out=tmp_path, report=False)
    assert capsys.readouterr().out.count("skipping: already finished") == 4
    assert len(finished(root)) == 4


class Killed(RuntimeError):
    pass


def test_killed_study_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    import lightning.pytorch as pl

    import t5lab.train.run as train_run

    # 48 examples / batch 8: 6 steps an epoch, a checkpoint at each epoch end
    study = tiny_study(seeds=1)
    study["base"]["train"]["max_steps"] = 12
    reference = run_study(study, out=tmp_path / "ref", report=False)

    class KillInSecondEpoch(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2:
                raise Killed("killed")

    make_trainer = train_run.make_trainer

    def killing_trainer(cfg, run_dir, progress=True):
        trainer = make_trainer(cfg, run_dir, progress)
        if "causal" in cfg.name:  # the second point: the first one finishes
            trainer.callbacks.append(KillInSecondEpoch())
        return trainer

    monkeypatch.setattr(train_run, "make_trainer", killing_trainer)
    with pytest.raises(Killed):
        run_study(study, out=tmp_path / "killed", report=False)
    monkeypatch.setattr(train_run, "make_trainer", make_trainer)
    root = tmp_path / "killed" / "tiny"
    [killed_run] = root.glob("runs/tiny-variant=causal-seed=0/*")
    assert not (killed_run / "DONE").exists()
    assert torch.load(killed_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6

    run_study(study, out=tmp_path / "killed", report=False)
    assert len(list(root.glob("runs/*/*"))) == 2  # the finished point skipped, the killed one resumed in place
    for name in ("tiny-variant=encdec-seed=0", "tiny-variant=causal-seed=0"):
        [a] = (reference / "runs" / name).glob("*")
        [b] = (root / "runs" / name).glob("*")
        assert json.loads((a / "DONE").read_text())["metrics"] == json.loads((b / "DONE").read_text())["metrics"]
        wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=k)
