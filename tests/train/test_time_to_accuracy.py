"""Time to accuracy: ``train.stop_at`` ends the run at the first validation that reaches it, the
wall-time breakdown sums to the measured wall time, ``train.val_examples`` limits decoding, and
validation decodes with the KV cache and stops at eos."""

from __future__ import annotations

import csv
import json
import time

import pytest
import torch

from t5lab.config import load_config, validate
from t5lab.errors import ConfigError
from t5lab.train.callbacks import reached, stop_mode, stop_targets
from t5lab.train.module import T5LabModule
from t5lab.train.run import build_pieces, resume, train
from t5lab.train.timing import PARTS, Stopwatch, phase, set_current
from tests.train.conftest import tiny

# 48 examples / batch 8: 6 steps an epoch, a validation every 3 steps, 12 steps at most
SHORT = dict(train={"max_steps": 12, "val_check_interval": 3, "lr": 1e-2})


def _val_rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("val_loss")]


@pytest.fixture(scope="module")
def unstopped(tmp_path_factory):
    [result] = train(tiny(**SHORT), out=tmp_path_factory.mktemp("runs"))
    return result


# -- the rule ---------------------------------------------------------------------------------------


def test_mode_from_the_metric_name_and_explicit_mode():
    assert stop_mode("val_loss") == "min" and stop_mode("val_ppl") == "min"
    assert stop_mode("val_exact_match") == "max" and stop_mode("val_token_acc") == "max"
    cfg = validate({"train": {"stop_at": {"val_exact_match": 0.99, "val_token_acc": {"value": 0.5, "mode": "min"}}}})
    assert stop_targets(cfg.train.stop_at) == [("val_exact_match", 0.99, "max"), ("val_token_acc", 0.5, "min")]


def test_reached_is_inclusive_and_needs_every_target():
    targets = [("val_exact_match", 1.0, "max"), ("val_loss", 0.1, "min")]
    assert reached(targets, {"val_exact_match": 1.0, "val_loss": 0.1})  # a threshold of 1.0 is reachable
    assert not reached(targets, {"val_exact_match": 1.0, "val_loss": 0.11})
    assert not reached(targets, {"val_exact_match": 0.98, "val_loss": 0.01})
    assert not reached(targets, {"val_exact_match": 1.0})  # not logged: not reached
    assert not reached([("val_loss", 0.1, "min")], {"val_loss": float("nan")})


def test_stop_at_config_errors():
    with pytest.raises(ConfigError, match="train.stop_at.*validation metric"):
        validate({"train": {"stop_at": {"train_loss": 0.1}}})
    with pytest.raises(ConfigError, match="train.val_examples"):
        validate({"train": {"val_examples": 0}})
    with pytest.raises(ConfigError, match="stop_at needs validation"):
        train(tiny(data={"val": 0}, train={"stop_at": {"val_loss": 1.0}}), out="unused-never-created")


# -- a run that stops -------------------------------------------------------------------------------


def test_stops_at_the_first_validation_that_reaches_the_target(unstopped, tmp_path, capsys):
    rows = _val_rows(unstopped.run_dir)
    assert len(rows) == 4  # steps 3, 6, 9, 12
    losses = [float(r["val_loss"]) for r in rows]
    # a target the second validation reaches first (<=, val_loss is loss-like)
    target = losses[1]
    assert losses[0] > target
    first = next(int(r["step"]) for r, v in zip(rows, losses) if v <= target)
    cfg = tiny(**SHORT)
    cfg["train"]["stop_at"] = {"val_loss": target}
    [result] = train(cfg, out=tmp_path)
    out = capsys.readouterr().out
    assert result.stopped is not None and result.stopped["step"] == first == 6
    assert result.stopped["val_loss"] == pytest.approx(target)
    assert result.stopped["time_s"] > 0
    assert "stopped at the target: val_loss=" in out and "at step 6" in out
    done = json.loads((result.run_dir / "DONE").read_text())
    assert done["step"] == first and done["stopped_at"] == result.stopped
    assert json.loads((result.run_dir / "timing.json").read_text())["stopped_at"] == result.stopped
    # no training after the stop, and up to it the same run as the unstopped one
    assert max(int(r["step"]) for r in csv.DictReader(open(result.run_dir / "metrics.csv"))) == first
    assert [r["val_loss"] for r in _val_rows(result.run_dir)] == [r["val_loss"] for r in rows[:2]]
    # the test evaluation ran on the stopped weights
    assert "test_exact_match" in result.metrics and "test_loss" in done["metrics"]
    assert result.metrics["val_loss"] == pytest.approx(target)

    # resumed after the stop (DONE lost): nothing more is trained, the first attempt's figures stay
    (result.run_dir / "DONE").unlink()
    again = resume(result.run_dir, progress=False)
    assert again.stopped == result.stopped
    assert json.loads((result.run_dir / "DONE").read_text())["step"] == first
    assert max(int(r["step"]) for r in csv.DictReader(open(result.run_dir / "metrics.csv"))) == first


def test_a_target_never_reached_trains_to_the_end(unstopped, tmp_path):
    cfg = tiny(**SHORT)
    cfg["train"]["stop_at"] = {"val_exact_match": 1.0, "val_loss": 0.0}
    [result] = train(cfg, out=tmp_path)
    assert result.stopped is None
    assert "stopped_at" not in json.loads((result.run_dir / "DONE").read_text())
    assert [r["val_loss"] for r in _val_rows(result.run_dir)] == [r["val_loss"] for r in _val_rows(unstopped.run_dir)]


# -- where the time went ----------------------------------------------------------------------------


def test_parts_sum_to_the_wall_time_measured_around_the_call(tmp_path):
    before = time.time() - 2.0  # as if the process had started 2 s before the call
    t0 = time.perf_counter()
    [result] = train(tiny(**SHORT), out=tmp_path, since=before)
    measured = time.perf_counter() - t0 + 2.0
    timing = json.loads((result.run_dir / "timing.json").read_text())
    assert timing == result.timing
    parts = timing["parts_s"]
    assert list(parts) == list(PARTS)
    assert all(v >= 0 for v in parts.values())
    assert sum(parts.values()) == pytest.approx(timing["wall_s"], abs=0.01)
    # the run ends just after timing.json: the call's own wall time within a small tolerance
    assert timing["wall_s"] == pytest.approx(measured, abs=0.25)
    assert parts["startup"] >= 2.0
    for name in ("train_steps", "eval", "decoding", "checkpointing", "logging", "data"):
        assert parts[name] > 0, name  # every part this run does is charged somewhere
    assert json.loads((result.run_dir / "DONE").read_text())["wall_s"] == timing["wall_s"]


def test_stopwatch_nesting_charges_the_innermost_part(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("t5lab.train.timing.time.perf_counter", lambda: now[0])
    watch = Stopwatch()
    watch.start(startup_s=1.5)
    set_current(watch)
    try:
        now[0] = 1.0  # 1 s of other
        with phase("eval"):
            now[0] = 3.0  # 2 s of eval
            with phase("decoding"):
                now[0] = 7.0  # 4 s of decoding
            now[0] = 8.0  # 1 s more eval
        now[0] = 8.5
    finally:
        set_current(None)
    parts = watch.stop()
    assert parts["startup"] == 1.5 and parts["other"] == 1.5 and parts["eval"] == 3.0 and parts["decoding"] == 4.0
    assert watch.wall_s == 10.0 == sum(parts.values())
    with phase("eval"):  # no run timing: a no-op
        pass


# -- validation cost --------------------------------------------------------------------------------


def test_val_examples_limits_decoding_not_the_loss(tmp_path, monkeypatch):
    decoded: list[int] = []
    original = T5LabModule._generate

    def counting(self, prompts, max_new):
        if not self.trainer.testing:
            decoded.append(int(prompts["input_ids"].shape[0]))
        return original(self, prompts, max_new)

    monkeypatch.setattr(T5LabModule, "_generate", counting)
    base = dict(train={"max_steps": 3, "val_check_interval": 3, "eval_batch_size": 2})
    [full] = train(tiny(**base), out=tmp_path / "full")
    assert sum(decoded) == 8  # the whole val split (8 examples) in batches of 2
    assert max(decoded) == 2
    decoded.clear()
    limited = tiny(**base)
    limited["train"]["val_examples"] = 3
    [part] = train(limited, out=tmp_path / "part")
    assert sum(decoded) == 3
    assert part.metrics["val_loss"] == full.metrics["val_loss"]  # loss over all 8
    assert part.metrics["val_token_acc"] == full.metrics["val_token_acc"]
    assert part.metrics["val_exact_match"] * 3 == pytest.approx(round(part.metrics["val_exact_match"] * 3))
    assert part.metrics["test_exact_match"] == full.metrics["test_exact_match"]  # test decoded whole


def test_decoded_token_acc_is_token_weighted_over_the_split(tmp_path, monkeypatch):
    import t5lab.train.module as module

    seen: list[tuple[list[list[int]], list[list[int]], int]] = []
    real = module.decoding_matches

    def spy(pred, target, eos, echo_input=False):
        assert echo_input is False  # this run writes plain targets
        seen.append((pred, target, eos))
        return real(pred, target, eos, echo_input)

    monkeypatch.setattr(module, "decoding_matches", spy)
    [result] = train(tiny(train={"max_steps": 12, "lr": 1e-2, "eval_batch_size": 3}), out=tmp_path)
    test_batches = seen[-3:]  # the 8 test examples in batches of 3, 3 and 2: decoded last
    assert [len(t) for _, t, _ in test_batches] == [3, 3, 2]
    hits = sum(real(*b)[1] for b in test_batches)
    tokens = sum(sum(x != -100 for x in row) for _, t, _ in test_batches for row in t)
    assert result.metrics["test_decoded_token_acc"] == pytest.approx(hits / tokens, abs=1e-6)
    assert 0 < hits < tokens  # a value that tells token weighting from a mean of batch means
    means = [real(*b)[1] / real(*b)[2] for b in test_batches]
    assert result.metrics["test_decoded_token_acc"] != pytest.approx(sum(means) / len(means), abs=1e-6)


@pytest.mark.parametrize("variant", ["t5", "gpt2"])
def test_decoding_uses_the_cache_and_stops_at_eos(variant):
    pieces = build_pieces(load_config(tiny(model={"variant": variant})))
    module = T5LabModule(pieces.model, pieces.cfg, pieces.formulation.kind, tokenizer=pieces.tokenizer)
    module.eval()
    eos = pieces.tokenizer.eos_token_id
    lengths: list[int] = []
    forward = pieces.model.forward

    def spy(*args, **kwargs):
        ids = kwargs.get("decoder_input_ids", kwargs.get("input_ids"))
        lengths.append(int(ids.shape[1]))
        out = forward(*args, **kwargs)
        if len(lengths) == 3:  # every row says eos at the third step
            out.logits[..., eos] = torch.finfo(out.logits.dtype).max
        return out

    pieces.model.forward = spy
    batch = next(iter(pieces.datamodule.val_dataloader()))
    prompts = batch["prompts"]
    pred = module._generate(prompts, max_new=7)
    assert len(lengths) == 3  # stopped at eos, not at max_new_tokens=7
    assert pred.shape == (prompts["input_ids"].shape[0], 3) and bool((pred[:, -1] == eos).all())
    assert lengths[1:] == [1, 1]  # after the prompt, one new token per step: the KV cache is used


def test_copy_recipe_is_the_seed_task_with_a_stop_target():
    from importlib import resources

    from t5lab.config import load_plans
    from t5lab.tasks import build_splits

    path = resources.files("t5lab") / "configs" / "recipes" / "copy.yaml"
    [(plan, _)] = load_plans(str(path), [])
    cfg = plan.cfg
    assert set(cfg.train.stop_at) == {"val_exact_match"} and cfg.train.stop_at["val_exact_match"] >= 0.99
    assert cfg.data.val > 0
    assert cfg.data.options == {"preset": "seed"} and cfg.data.train == 50000
    # the seed harness's copy: 0-60 symbols of a-z A-Z 0-9, fitting data.max_length with eos
    few = build_splits(plan.task, 200, 0, 0, cfg.data.seed)["train"]
    assert max(len(r.input) for r in few) <= 60 < cfg.data.max_length
    assert all(r.target == r.input for r in few)


def test_cli_prints_the_breakdown_with_startup_since_the_process_start(tmp_path, capsys):
    import yaml

    from t5lab.cli import main
    from t5lab.train.timing import process_start

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny(train={"max_steps": 3})))
    before = time.time()
    assert main(["train", str(config), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "wall time" in out and "train_steps" in out and "startup" in out
    [run_dir] = (tmp_path / "runs" / "tiny").iterdir()
    timing = json.loads((run_dir / "timing.json").read_text())
    # start-up counts from the process start: at least the time this test process ran before the call
    assert timing["parts_s"]["startup"] >= before - process_start() - 0.01
