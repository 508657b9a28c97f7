"""`t5lab sample|eval|attn|plot|trace|compare`: outputs on a run, one-line errors with exit code 2."""

from __future__ import annotations

import shutil

import pytest

from t5lab.cli import main
from tests.explore.runs import hand_made_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return hand_made_run(tmp_path_factory.mktemp("runs"), "cli", "t5", [3.0, 2.5], [9, 19])


def _run(capsys, *argv):
    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sample_eval_plot_trace(run_dir, capsys, tmp_path):
    code, out, _ = _run(capsys, "sample", run_dir, "--prompt", "abc", "--prompt", "hgfe", "--max-new-tokens", "3")
    assert code == 0 and "abc" in out and "hgfe" in out
    code, out, _ = _run(capsys, "eval", run_dir, "--split", "val")
    assert code == 0 and "ppl" in out and "token_acc" in out
    code, out, _ = _run(capsys, "plot", run_dir, "--out", tmp_path / "m.png", "--x", "samples")
    assert code == 0 and (tmp_path / "m.png").stat().st_size > 10_000
    code, out, _ = _run(capsys, "trace", run_dir / "model", "--text", "abcd", "--max-new-tokens", "5")
    assert code == 0 and "1 encoder call(s), 5 decoder call(s); decoder cache lengths [0, 1, 2, 3, 4]" in out


def test_attn_and_compare_write_pngs(run_dir, capsys, tmp_path):
    code, out, _ = _run(capsys, "attn", run_dir, "--text", "abc", "--out", tmp_path / "attn", "--layers", "0")
    assert code == 0 and "mean entropy" in out
    assert sorted(p.name for p in (tmp_path / "attn").iterdir()) == ["cross_layer0.png", "decoder_layer0.png", "encoder_layer0.png"]
    code, out, _ = _run(capsys, "compare", run_dir, run_dir, "--out", tmp_path / "c.png", "--no-measure")
    assert code == 0 and "steps to threshold" in out and (tmp_path / "c.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "{missing}", "--prompt", "a"], "no such run or model directory"),
        (["sample", "{run}", "--prompt", "abcdefgh" * 3], "prompt of 25 tokens is longer than the model's context of 12 tokens"),
        (["plot", "{run}", "--metrics", "val_acc"], "unknown metric 'val_acc'"),
        (["compare", "{run}", "--metric", "bleu", "--no-measure"], "unknown metric 'bleu'"),
        (["attn", "{run}", "--text", "ab", "--out", "{tmp}/a", "--layers", "7"], "layer [7] out of range"),
        (["attn", "{run}", "--text", "ab", "--out", "{tmp}/a", "--heads", "4"], "head [4] out of range"),
        (["eval", "{tmp}/bare"], "eval needs a run directory"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(run_dir, capsys, tmp_path, argv, message):
    shutil.copytree(run_dir / "model", tmp_path / "bare")  # a model directory outside any run
    argv = [a.format(run=run_dir, missing=tmp_path / "missing", tmp=tmp_path) for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2
    last = err.strip().splitlines()[-1]  # (transformers may log warnings before it)
    assert last.startswith("error: ") and message in last
    assert not [line for line in err.splitlines() if "Traceback" in line]
    assert not (tmp_path / "a").exists()  # nothing half-written
