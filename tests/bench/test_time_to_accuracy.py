"""bench time_to_accuracy: the plain reference loop is the harness's model, data and settings (the
same training losses step for step, the same validation metrics), the target and the time cap end
both sides, a missing recipe is a listed skip, and the table has one row per task x variant.

Tiny configs made by overriding the copy recipe: seconds each, fp32 (and bf16-mixed where said), one
thread, deterministic.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from t5lab.bench.tta import (
    TASKS,
    VARIANTS,
    MissingRecipe,
    cell_overrides,
    find_recipe,
    harness_run,
    markdown,
    plain_run,
    recipe_config,
    recipe_dir,
    table_rows,
    time_to_accuracy,
    warm_up_overrides,
)
from t5lab.config import load_config
from t5lab.errors import ConfigError, T5LabError

# 64 examples / batch 8: 8 steps an epoch, so 10 steps cross an epoch boundary (a new order);
# warmup and a tight clip make the schedule and the clipping show in the losses
TINY = ["model.d_model=32", "model.d_ff=64", "model.num_layers=1", "model.num_heads=2", "model.d_kv=16",
        "data.train=64", "data.val=8", "data.test=8", "data.max_length=12", "data.options.max_len=8",
        "train.batch_size=8", "train.eval_batch_size=8", "train.max_steps=10", "train.warmup_steps=3",
        "train.gradient_clip_val=0.5", "train.val_check_interval=5", "train.val_examples=8",
        "train.log_every_n_steps=1", "train.stop_at=null", "trainer.num_threads=1", "train.precision=32"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cell(variant: str, extra: list[str] = (), cap: float = 100.0):
    raw, _ = recipe_config("copy", variant)
    ov = cell_overrides(cap, [*TINY, *extra])
    return raw, ov, load_config(raw, ov)


def _harness_rows(out: Path) -> tuple[list[float], list[dict[str, str]]]:
    [run] = list(out.glob("*/*"))
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [float(r["train_loss"]) for r in rows if r.get("train_loss")], [r for r in rows if r.get("val_loss")]


@pytest.mark.parametrize(
    "variant,extra",
    [("gpt2", []), ("t5", []), ("pseudo_dec", []), ("decoder_only", []), ("t5", ["data.bucketing=false"]),
     # a length curriculum over 6 of the 10 steps, after it bucketed or plain batches
     ("decoder_only", ["data.curriculum.start=4", "data.curriculum.steps=6"]),
     ("t5", ["data.bucketing=false", "data.curriculum.start=4", "data.curriculum.steps=6"]),
     # bf16 autocast as Lightning's plugin runs it (no weight-cast cache, validation too) and clipping
     # over the optimizer's parameters in its order: bf16 rounding turns any other order into a drift
     ("t5", ["train.precision=bf16-mixed"]), ("decoder_only", ["train.precision=bf16-mixed"])],
    ids=["gpt2", "t5", "pseudo_dec", "decoder_only", "t5-no-bucketing", "decoder_only-curriculum",
         "t5-no-bucketing-curriculum", "t5-bf16", "decoder_only-bf16"],
)
def test_plain_loop_trains_the_same_model_on_the_same_batches(tmp_path, variant, extra):
    raw, ov, cfg = _cell(variant, extra)
    plain = plain_run(cfg)
    harness = harness_run(raw, ov, tmp_path)
    losses, vals = _harness_rows(tmp_path)
    assert len(losses) == plain.steps == harness.steps == 10
    torch.testing.assert_close(torch.tensor(plain.losses), torch.tensor(losses), rtol=1e-5, atol=1e-5)
    # the same validations: the same steps, teacher-forced metrics and exact match
    assert [s for s, _ in plain.vals] == [int(r["step"]) for r in vals] == [5, 10]
    for (_, mine), theirs in zip(plain.vals, vals):
        assert mine["val_loss"] == pytest.approx(float(theirs["val_loss"]), rel=1e-5)
        assert mine["val_token_acc"] == pytest.approx(float(theirs["val_token_acc"]), abs=1e-6)
        assert mine["val_exact_match"] == pytest.approx(float(theirs["val_exact_match"]), abs=1e-6)
        assert mine["val_decoded_token_acc"] == pytest.approx(float(theirs["val_decoded_token_acc"]), abs=1e-6)
    assert plain.samples == harness.samples == 80
    assert harness.test_exact_match is not None and plain.test_exact_match is None


def test_the_losses_differ_when_the_reference_is_not_the_same_setting():
    """The parity above can fail: another seed gives other losses from the first step."""
    _, _, cfg = _cell("gpt2", ["train.max_steps=2", "train.warmup_steps=0"])
    _, _, other = _cell("gpt2", ["train.max_steps=2", "train.warmup_steps=0", "train.seed=1"])
    a, b = plain_run(cfg, validate=False).losses, plain_run(other, validate=False).losses
    assert abs(a[0] - b[0]) > 1e-3


def test_the_target_ends_both_sides_at_the_same_validation(tmp_path):
    raw, ov, cfg = _cell("gpt2", ["train.val_check_interval=2", "train.stop_at={val_loss: 100.0}"])
    plain, harness = plain_run(cfg), harness_run(raw, ov, tmp_path)
    for side in (plain, harness):
        assert side.reached and side.steps == 2
        assert 0 < side.time_to_target_s <= side.wall_s
    assert harness.best_val_exact_match is not None


def test_the_time_cap_ends_both_sides_after_one_step(tmp_path):
    # unreachable target; a cap of 1 ms is up after the first step on both sides (Lightning's Timer
    # and the plain loop both check after every step and validate at the stop)
    raw, ov, cfg = _cell("t5", ["train.stop_at={val_loss: 0.0}"], cap=0.001)
    assert cfg.train.max_time_s == 0.001
    plain, harness = plain_run(cfg), harness_run(raw, ov, tmp_path)
    assert plain.steps == harness.steps == 1
    assert not plain.reached and not harness.reached and plain.time_to_target_s is None
    assert [s for s, _ in plain.vals] == [1] and len(_harness_rows(tmp_path)[1]) == 1


def test_max_time_s_must_be_positive():
    with pytest.raises(ConfigError, match="train.max_time_s"):
        load_config({}, ["train.max_time_s=0"])
    assert load_config({}, []).train.max_time_s is None


def test_recipes_ship_with_the_package_and_a_missing_one_names_both_files(tmp_path):
    assert find_recipe("copy", "gpt2") == recipe_dir() / "copy.yaml"
    with pytest.raises(MissingRecipe, match=r"no recipe for task 'sort'.*sort-t5\.yaml.*sort\.yaml"):
        find_recipe("sort", "t5", tmp_path)


def test_variant_recipe_first_and_options_kept_only_for_their_variant(tmp_path):
    (tmp_path / "copy.yaml").write_text(
        "model: {variant: decoder_only, options: {prefix_lm: true}}\ndata: {task: copy, options: {preset: seed}}\n")
    (tmp_path / "copy-t5.yaml").write_text("model: {variant: t5, d_model: 48}\ndata: {task: copy}\n")
    raw, path = recipe_config("copy", "gpt2", tmp_path)
    assert path.name == "copy.yaml" and raw["model"]["variant"] == "gpt2" and raw["model"]["options"] == {}
    raw, _ = recipe_config("copy", "decoder_only", tmp_path)
    assert raw["model"]["options"] == {"prefix_lm": True}
    raw, path = recipe_config("copy", "t5", tmp_path)
    assert path.name == "copy-t5.yaml" and raw["model"]["d_model"] == 48
    (tmp_path / "sort.yaml").write_text("data: {task: copy}\n")
    with pytest.raises(ConfigError, match="data.task='copy' evaluates 'copy', expected 'sort'"):
        recipe_config("sort", "t5", tmp_path)
    # a mixture recipe is the recipe of the task it evaluates
    (tmp_path / "reverse.yaml").write_text(
        "data: {task: mixture, options: {evaluate: reverse, tasks: {reverse: {prefix: 'r: '}, copy: {prefix: 'c: '}}}}\n")
    raw, path = recipe_config("reverse", "t5", tmp_path)
    assert path.name == "reverse.yaml" and raw["data"]["task"] == "mixture"
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(tmp_path / "reverse.yaml", other / "copy.yaml")
    with pytest.raises(ConfigError, match="evaluates 'reverse', expected 'copy'"):
        recipe_config("copy", "t5", other)


def test_table_has_one_row_per_task_and_variant_and_lists_skipped_cells(tmp_path, capsys):
    shutil.copy(recipe_dir() / "copy.yaml", tmp_path / "copy.yaml")  # no sort recipe here
    rows = time_to_accuracy(tasks="copy,sort", variants=["gpt2", "t5"], time_cap_s=60,
                            overrides=[*TINY, "train.max_steps=4", "train.val_check_interval=2"],
                            recipes=tmp_path, out=tmp_path / "runs", warmup_steps=3)
    printed = capsys.readouterr().out
    # one untimed warm-up, before the first cell, whose run dir is not among the cells' runs
    assert printed.count("warming up") == 1 and "warming up on copy/gpt2 (3 untimed" in printed
    assert printed.index("warming up") < printed.index("time_to_accuracy copy/gpt2:")
    assert len(list((tmp_path / "runs").glob("*/*"))) == 2
    assert [r.candidate for r in rows] == ["copy/gpt2", "copy/t5", "sort/gpt2", "sort/t5"]
    cells = table_rows(rows)
    assert [c[:2] for c in cells] == [["copy", "gpt2"], ["copy", "t5"], ["sort", "gpt2"], ["sort", "t5"]]
    assert cells[2][2] == "skipped: no recipe" and "sort.yaml" in rows[2].extra["skipped"]
    ran = rows[0]
    assert ran.metric == "train samples/s" and ran.extra["harness"]["steps"] == ran.extra["plain"]["steps"] == 4
    assert ran.raw_ratio == pytest.approx(ran.extra["harness"]["samples_per_s"] / ran.extra["plain"]["samples_per_s"])
    assert rows[0].extra["first"] == "harness" and rows[1].extra["first"] == "plain"  # sides alternate
    text = markdown(rows, command="t5lab bench time_to_accuracy --tasks copy,sort")
    lines = text.splitlines()
    assert lines[0] == "Made by `t5lab bench time_to_accuracy --tasks copy,sort`"
    table = [ln for ln in lines if ln.startswith("| ")]
    assert len(table) == 1 + 4 and table[0].startswith("| task | variant | recipe |")
    assert all(ln.count("|") == table[0].count("|") for ln in table)


@pytest.mark.parametrize("task", TASKS)
def test_every_shipped_recipe_takes_the_warm_up_overrides(task):
    for variant in VARIANTS:
        try:
            raw, _ = recipe_config(task, variant)
        except MissingRecipe:
            continue
        cfg = load_config(raw, warm_up_overrides(cell_overrides(150.0, []), 20))
        assert cfg.train.max_steps == 20 and cfg.train.stop_at is None and cfg.data.val == 8


def test_no_warm_up_when_its_steps_are_zero(tmp_path, monkeypatch):
    import t5lab.bench.tta as tta

    calls = []
    monkeypatch.setattr(tta, "warm_up", lambda *a, **k: calls.append(a))
    rows = time_to_accuracy(tasks="copy", variants="gpt2", time_cap_s=60, warmup_steps=0,
                            overrides=[*TINY, "train.max_steps=2", "train.warmup_steps=1", "train.val_check_interval=2"],
                            out=tmp_path / "runs")
    assert calls == [] and rows[0].extra["harness"]["steps"] == 2


def test_bad_choices_are_one_line_errors_before_any_run(tmp_path):
    from t5lab.cli import main

    with pytest.raises(T5LabError, match="--tasks reverse: not an original task"):
        time_to_accuracy(tasks="reverse")
    with pytest.raises(T5LabError, match="--variants enct5"):
        time_to_accuracy(variants="enct5")
    with pytest.raises(T5LabError, match="--time-cap"):
        time_to_accuracy(time_cap_s=0)
    out = tmp_path / "b.json"
    assert main(["bench", "time_to_accuracy", "--tasks", "nope", "--out", str(out)]) == 2
    assert main(["bench", "hooks", "--tasks", "copy", "--out", str(out)]) == 2
    assert not out.exists()


def test_time_to_accuracy_runs_only_when_named():
    from t5lab.bench.cases import CASES, OPT_IN

    assert "time_to_accuracy" in CASES and "time_to_accuracy" in OPT_IN


def test_cli_passes_the_case_options_and_writes_the_table(tmp_path, monkeypatch):
    from t5lab.bench import cases
    from t5lab.bench.core import Comparison
    from t5lab.cli import main

    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return [Comparison("time_to_accuracy", f"copy/{v}", "plain_loop", "skipped", None, None, "record",
                           extra={"task": "copy", "variant": v, "skipped": "no recipe"}) for v in kwargs["variants"]]

    monkeypatch.setitem(cases.CASES, "time_to_accuracy", fake)
    md = tmp_path / "t.md"
    argv = ["bench", "time_to_accuracy", "--tasks", "copy", "--variants", "gpt2,t5", "--time-cap", "5",
            "--out", str(tmp_path / "b.json"), "--markdown", str(md)]
    assert main(argv) == 0
    assert seen["tasks"] == ("copy",) and seen["variants"] == ("gpt2", "t5") and seen["time_cap_s"] == 5.0
    text = md.read_text()
    assert text.startswith("Made by `t5lab bench time_to_accuracy --tasks copy --variants gpt2,t5 --time-cap 5`")
    assert sum(ln.startswith("| copy |") for ln in text.splitlines()) == 2
