"""Faults at every write of a run directory: killed runs resume to the uninterrupted result.

A real training process (forked from the test process, so no second import of torch) is ended
with ``os._exit(137)``, what ``kill -9`` leaves, at a named write point (``T5LAB_FAULT``, see
t5lab.rundir.fault); ``t5lab train --resume`` then finishes it, and the weights, metrics.csv,
samples.txt and DONE must equal those of one uninterrupted run (the module's reference fixture).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from t5lab import rundir
from t5lab.cli import main
from t5lab.train.run import train
from tests.train.conftest import tiny

# 2 epochs of 6 steps, validation after each, a test pass; dropout so that RNG state must survive
RAW = tiny(name="faults", model={"dropout": 0.1}, train={"max_steps": 12, "log_every_n_steps": 2})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    [result] = train(RAW, out=tmp_path_factory.mktemp("reference"))
    rows = [r for r in _csv(result.run_dir) if r.get("val_loss")]
    assert float(rows[1]["val_loss"]) < float(rows[0]["val_loss"]), "best.ckpt must be rewritten at epoch 2"
    return result.run_dir


def _csv(run):
    import csv

    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def killed_run(out, fault: str, raw=RAW):
    """A training process ended by os._exit(137) at ``fault``; returns its run directory."""
    pid = os.fork()
    if pid == 0:  # the child: train until the fault point ends it
        code = 1
        try:
            os.environ[rundir.FAULT_ENV] = fault
            rundir._fault_counts.clear()
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                train(raw, out=out, progress=False)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137, f"T5LAB_FAULT={fault} did not end the run"
    [run] = list(out.glob(f"{raw['name']}/*"))
    assert not (run / "DONE").exists()
    return run


def leftovers(run):
    return sorted(
        str(p.relative_to(run))
        for p in run.rglob("*")
        if p.name.endswith((".tmp", ".old")) or rundir._TEMP_DIR.match(p.name) or p.name == rundir.LOCK
    )


def assert_same_as(run, ref):
    """Weights, metrics.csv, samples.txt and DONE of ``run`` equal the uninterrupted ``ref``."""
    a, b = load_file(ref / "model" / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    assert (run / "metrics.csv").read_text() == (ref / "metrics.csv").read_text()
    assert (run / "samples.txt").read_text() == (ref / "samples.txt").read_text()
    da, db = json.loads((ref / "DONE").read_text()), json.loads((run / "DONE").read_text())
    assert (db["step"], db["metrics"]) == (da["step"], da["metrics"])
    assert leftovers(run) == []
    for rel in rundir.read_manifest(run):  # every recorded file verifies
        assert rundir.verify(run / rel, run), rel


def resume(run, *flags):
    return main(["train", "--resume", str(run), "--no-progress", *flags])


# -- kills at each write point ---------------------------------------------------------------------

FAULTS = {
    "best_ckpt_tmp:2": "checkpoints/.best.ckpt.*.tmp",  # epoch 2's best.ckpt written, not renamed
    "last_ckpt_tmp:2": "checkpoints/.last.ckpt.*.tmp",  # best.ckpt is newer than last.ckpt
    "last_ckpt_tmp:1": "checkpoints/.last.ckpt.*.tmp",  # no last.ckpt yet, best.ckpt exists
    "model_tmp": ".model.*",  # the final model save's temp dir complete, not swapped in
    "model_swap": ".model.old",  # the old model/ moved aside, the new one not yet renamed
    "metrics:4": ".metrics.csv.*.tmp",
    "samples:2": ".samples.txt.*.tmp",  # epoch 2's validation block
    "samples:3": ".samples.txt.*.tmp",  # the test block
    "manifest:3": ".manifest.json.*.tmp",
    "done": ".DONE.*.tmp",
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_kill_at_write_point_then_resume_equals_uninterrupted(reference, tmp_path, fault, capsys):
    run = killed_run(tmp_path, fault)
    assert list(run.glob(FAULTS[fault])), f"the kill at {fault} left no {FAULTS[fault]}"
    assert resume(run) == 0
    if fault in ("best_ckpt_tmp:2", "last_ckpt_tmp:2", "model_tmp"):
        assert "leftover(s) of an interrupted write" in capsys.readouterr().out
    assert_same_as(run, reference)


def test_kill_at_a_random_step_then_resume_equals_uninterrupted(reference, tmp_path):
    step = random.randint(1, 11)
    run = killed_run(tmp_path, f"step:{step}")
    assert resume(run) == 0, f"killed after step {step}"
    assert_same_as(run, reference)


def test_kill_9_of_a_cli_subprocess_then_resume(reference, tmp_path):
    """The same through the command line, in a separate interpreter."""
    config = tmp_path / "faults.yaml"
    config.write_text(yaml.safe_dump(RAW))
    env = {**os.environ, rundir.FAULT_ENV: "after:ckpt_tmp:3", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "t5lab.cli", "train", str(config), "--out", str(tmp_path), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr[-2000:]
    [run] = list(tmp_path.glob("faults/*"))
    assert resume(run) == 0
    assert_same_as(run, reference)


def test_two_kills_in_a_row(reference, tmp_path):
    """Killed, resumed, killed again at another point, resumed: still the uninterrupted result."""
    run = killed_run(tmp_path, "last_ckpt_tmp:2")
    pid = os.fork()
    if pid == 0:
        try:
            os.environ[rundir.FAULT_ENV] = "model_tmp"
            rundir._fault_counts.clear()
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                resume(run)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137
    assert resume(run) == 0
    assert_same_as(run, reference)


# -- damaged files ------------------------------------------------------------------------------------


def unfinished(reference, tmp_path):
    """A copy of the reference run as if killed after its last checkpoint (no DONE, no model yet)."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "DONE").unlink()
    return run


def cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0] and "weights_only=False" not in err[0]
    return err[0]


def test_cut_last_ckpt_falls_back_to_best(reference, tmp_path, capsys):
    run = unfinished(reference, tmp_path)
    cut(run / "checkpoints" / "last.ckpt")
    assert resume(run) == 0
    out = capsys.readouterr().out
    assert "last.ckpt is damaged" in out and "moved to last.ckpt.damaged" in out and "best.ckpt (step 12)" in out
    assert_same_as(run, reference)


def test_no_valid_checkpoint_is_one_line_exit_2(reference, tmp_path, capsys, monkeypatch):
    run = unfinished(reference, tmp_path)
    cut(run / "checkpoints" / "last.ckpt")
    cut(run / "checkpoints" / "best.ckpt", 0.3)
    assert resume(run) == 2
    line = one_error_line(capsys)
    assert "no valid checkpoint" in line and "last.ckpt" in line
    monkeypatch.setenv("T5LAB_DEBUG", "1")  # the traceback, then the same line
    assert resume(run) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.strip().splitlines()[-1] == line


@pytest.mark.parametrize("damage", ["cut", "header", "flip"])
def test_damaged_weights_are_one_line_naming_the_file(reference, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    weights = run / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "cut":
        data = data[: len(data) // 2]
    elif damage == "header":
        data[8:40] = b"x" * 32
    else:  # one flipped bit in the tensor data: loads fine, the hash says otherwise
        data[-100] ^= 1
    weights.write_bytes(bytes(data))
    assert main(["sample", str(run), "--prompt", "ab"]) == 2
    line = one_error_line(capsys)
    assert "model.safetensors" in line
    if damage == "flip":
        assert "sha256" in line and "--no-verify" in line
        assert main(["sample", str(run), "--prompt", "ab", "--no-verify"]) == 0  # the explicit opt-out loads it
        assert main(["eval", str(run), "--no-verify"]) == 0
        from t5lab.explore import load_run

        assert load_run(run, verify=False).model is not None
        with pytest.raises(rundir.RunDirError, match="sha256"):
            load_run(run)


def test_missing_tensor_is_one_line(reference, tmp_path):
    from safetensors.torch import save_file

    from t5lab.explore import load_run

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    weights = load_file(run / "model" / "model.safetensors")
    weights.pop(sorted(weights)[0])
    save_file(weights, run / "model" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(rundir.RunDirError, match="lack 1 tensor"):
        load_run(run, verify=False)


@pytest.mark.parametrize("model_type", ["gpt2", "t5_nope"])
def test_wrong_model_type_is_one_line(reference, tmp_path, capsys, model_type):
    """config.json naming another model type than the weights hold (or an unknown one): one line."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    cfg = json.loads((run / "model" / "config.json").read_text())
    cfg.update(model_type=model_type, architectures=["GPT2LMHeadModel"] if model_type == "gpt2" else cfg["architectures"])
    (run / "model" / "config.json").write_text(json.dumps(cfg))
    assert main(["sample", str(run), "--prompt", "ab"]) == 2
    line = one_error_line(capsys)
    assert (model_type in line) if model_type == "t5_nope" else ("lack" in line and "from another model" in line)


class _Payload:
    def __reduce__(self):
        return (print, ("PICKLE CODE RAN",))


def test_crafted_pickle_checkpoint_is_refused_without_torch_hint(reference, tmp_path, capsys):
    import pickle

    run = unfinished(reference, tmp_path)
    for name in ("last.ckpt", "best.ckpt"):
        (run / "checkpoints" / name).write_bytes(pickle.dumps({"state_dict": _Payload()}))
    with pytest.raises(rundir.RunDirError) as err:
        rundir.load_checkpoint(run / "checkpoints" / "last.ckpt", verify_hash=False)
    assert "refusing to unpickle" in str(err.value) and "weights_only" not in str(err.value)
    assert resume(run, "--no-verify") == 2  # past the hash check: the unpickler refuses it
    line = one_error_line(capsys)
    assert "refusing to unpickle" in line
    assert resume(run) == 2  # with the check: the hash refuses it first
    assert "sha256" in one_error_line(capsys)
    assert "PICKLE CODE RAN" not in capsys.readouterr().out


def test_cut_metrics_row_is_refused_with_its_line(reference, tmp_path, capsys):
    from t5lab.errors import T5LabError
    from t5lab.explore import load_run

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    text = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1] + "\n")
    lines = len(text.splitlines())
    with pytest.raises(T5LabError, match=f"metrics.csv line {lines}: "):
        load_run(run, load_model=False)
    assert main(["plot", str(run), "--out", str(tmp_path / "m.png")]) == 2
    assert f"line {lines}" in one_error_line(capsys)


def test_cut_metrics_row_is_never_merged_on_resume(reference, tmp_path, capsys):
    run = killed_run(tmp_path, "step:11")  # rows up to step 10 logged, last.ckpt at step 6
    text = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text(text[: len(text) - 12] + "\n")  # the row of step 10, cut
    assert resume(run) == 0
    assert "a cut row of step 10 dropped, not merged" in capsys.readouterr().out
    assert_same_as(run, reference)


def test_cut_metrics_row_before_the_checkpoint_stops_resume(reference, tmp_path, capsys):
    run = unfinished(reference, tmp_path)
    lines = (run / "metrics.csv").read_text().splitlines()
    lines[2] = lines[2][:5]  # step 4's row, which the checkpoint (step 12) already holds
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    assert resume(run) == 2
    assert "line 3" in one_error_line(capsys)


def test_epoch_column_is_filled(reference):
    rows = _csv(reference)
    assert [int(r["epoch"]) for r in rows] == [0 if int(r["step"]) <= 6 else 1 for r in rows]


# -- locks ---------------------------------------------------------------------------------------------


def test_second_process_on_a_run_dir_is_refused(reference, tmp_path, capsys):
    import socket

    run = unfinished(reference, tmp_path)
    (run / rundir.LOCK).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "command": "train"}) + "\n")
    assert resume(run) == 2
    line = one_error_line(capsys)
    assert "is in use by train" in line and f"pid {os.getppid()}" in line
    assert not (run / "DONE").exists()


def test_stale_lock_of_a_dead_process_is_taken_over(reference, tmp_path, capsys):
    import socket

    run = unfinished(reference, tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / rundir.LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}) + "\n")
    assert resume(run) == 0
    assert f"taking over the lock of {run}" in capsys.readouterr().out
    assert_same_as(run, reference)


def test_two_resumes_at_once_one_is_refused(reference, tmp_path, capsys):
    """A second `t5lab train --resume` while a first one runs is refused; samples.txt is not doubled.

    The two processes hand over through pipes, not deadlines: the first one says when it holds the
    lock and then blocks until the test has tried the second one (a wait of 60 s there let a starved
    test process find the run already finished). If the test fails, closing the pipe releases it.
    """
    run = killed_run(tmp_path, "last_ckpt_tmp:2")
    locked_r, locked_w = os.pipe()  # first process -> test: "I hold the lock"
    go_r, go_w = os.pipe()  # test -> first process: "go on" (or EOF: the test ended)
    pid = os.fork()
    if pid == 0:  # the first process: holds the lock until the test has tried the second one
        code = 1
        try:
            os.close(locked_r)
            os.close(go_w)
            from t5lab.train import run as run_mod

            clean = run_mod._clean_stale

            def wait_then_clean(path):  # called right after the lock is taken
                os.write(locked_w, b"1")
                os.read(go_r, 1)
                clean(path)

            run_mod._clean_stale = wait_then_clean
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                code = resume(run)
        finally:
            os._exit(code)
    os.close(locked_w)
    os.close(go_r)
    try:
        assert os.read(locked_r, 1) == b"1", "the first process ended before it took the lock"
        assert rundir.RunLock(run)._holder()["pid"] == pid  # its own lock, not the killed run's stale one
        assert resume(run) == 2
        line = one_error_line(capsys)
        assert "is in use by train" in line and f"pid {pid} " in line
        os.write(go_w, b"1")
    finally:
        os.close(go_w)
        os.close(locked_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert_same_as(run, reference)


# -- modes, write errors ---------------------------------------------------------------------------------


def test_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        [result] = train(tiny(name="umask", train={"max_steps": 2}), out=tmp_path)
    finally:
        os.umask(old)
    for p in [result.run_dir, *result.run_dir.rglob("*")]:
        want = 0o775 if p.is_dir() else 0o664
        assert p.stat().st_mode & 0o777 == want, (p, oct(p.stat().st_mode))


def test_file_size_limit_is_one_line_and_nothing_half_written(tmp_path):
    """ulimit -f 60 (EFBIG at the first checkpoint): one line on stderr, exit 2, no temp file left."""
    import resource

    config = tmp_path / "faults.yaml"
    config.write_text(yaml.safe_dump(RAW))
    err_path = tmp_path / "stderr.txt"
    pid = os.fork()
    if pid == 0:  # everything the process writes to fd 2 (tracebacks included) goes to err_path
        code = 1
        try:
            fd = os.open(err_path, os.O_WRONLY | os.O_CREAT)
            os.dup2(fd, 2)
            sys.stderr = open(2, "w", closefd=False)
            resource.setrlimit(resource.RLIMIT_FSIZE, (60 * 1024, 60 * 1024))
            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                code = main(["train", str(config), "--out", str(tmp_path / "runs"), "--no-progress"])
            sys.stderr.flush()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    text = err_path.read_text()
    assert os.waitstatus_to_exitcode(status) == 2, text[-3000:]
    err = text.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in text, text[-3000:]
    assert err[0].startswith("error: cannot write ") and "File too large" in err[0] and "ulimit -f" in err[0]
    [run] = list((tmp_path / "runs").glob("faults/*"))
    assert leftovers(run) == [] and not (run / "DONE").exists()


def test_disk_full_and_permission_are_one_line(tmp_path):
    import errno

    err = rundir.write_error(tmp_path / "x", OSError(errno.ENOSPC, "No space left on device"))
    assert "No space left on device" in str(err) and "free some space" in str(err) and str(tmp_path / "x") in str(err)
    err = rundir.write_error(tmp_path / "x", PermissionError(errno.EACCES, "Permission denied"))
    assert "Permission denied" in str(err) and "make the directory writable or choose another --out" in str(err)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(rundir.RunDirError, match="Permission denied"):
            rundir.atomic_write_text(ro / "f.txt", "x")
    with pytest.raises(rundir.RunDirError, match="No space left"):
        def full(fh):
            raise OSError(errno.ENOSPC, "No space left on device")

        rundir.atomic_write(tmp_path / "g.txt", full)
    assert list(tmp_path.glob(".g.txt.*")) == [] and not (tmp_path / "g.txt").exists()


def test_rundir_imports_no_torch():
    code = "import sys, t5lab.rundir; sys.exit('torch' in sys.modules or 'lightning' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
