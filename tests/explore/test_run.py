"""load_run / verify_stable_load / plot_metrics / compare on hand-made and trained run directories."""

from __future__ import annotations

import math

import pytest
import torch

import t5lab
from t5lab.errors import T5LabError
from tests.explore.runs import hand_made_run, trained_run


@pytest.fixture
def two_runs(tmp_path):
    a = hand_made_run(tmp_path, "a", "t5", [3.0, 2.0, 1.5, 1.2], [9, 19, 29, 39])
    b = hand_made_run(tmp_path, "b", "decoder_only", [3.5, 2.5, 1.9], [9, 19, 29])
    return a, b


def test_load_run_gives_model_tokenizer_config_metrics_and_splits(two_runs):
    run = t5lab.load_run(two_runs[0].parent)  # runs/<name> picks its newest run
    assert run.path == two_runs[0] and run.variant == "t5" and run.config.model.d_model == 32
    assert isinstance(run.model, torch.nn.Module) and not run.model.training
    assert run.metrics.series("val_loss") == ([9, 19, 29, 39], [3.0, 2.0, 1.5, 1.2])
    assert run.metrics.last("val_loss") == 1.2
    assert {k: len(v) for k, v in run.splits.items()} == {"train": 128, "val": 32, "test": 0}
    assert run.num_parameters() == sum(p.numel() for p in run.model.parameters())
    # a bare model directory loads too, without config or metrics
    bare = t5lab.load_run(two_runs[1] / "model")
    assert bare.variant == "decoder_only" and type(bare.model).__name__ == "T5DecoderOnlyForCausalLM"


def test_evaluate_matches_perplexity_on_the_same_records(two_runs):
    run = t5lab.load_run(two_runs[0])
    result = run.evaluate("val")
    ppl = t5lab.perplexity(run.model, run.tokenizer, run.splits["val"])
    assert result["tokens"] == ppl.tokens
    assert result["loss"] == pytest.approx(ppl.loss, rel=1e-5)
    assert result["ppl"] == pytest.approx(ppl.mean, rel=1e-5)


def test_verify_stable_load_reports_a_mismatch(two_runs):
    run = t5lab.load_run(two_runs[0])
    with pytest.raises(T5LabError, match=r"recomputed val_loss .* != stored 1.200000"):
        run.verify_stable_load()


def test_missing_run_and_unknown_metric_are_clear_errors(two_runs, tmp_path):
    with pytest.raises(T5LabError, match="no such run or model directory"):
        t5lab.load_run(tmp_path / "nope")
    with pytest.raises(T5LabError, match="unknown metric 'val_acc'; metrics.csv has: step, epoch"):
        t5lab.plot_metrics(two_runs[0], ["val_acc"], out=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("x", ["step", "samples"])
def test_plot_metrics_writes_a_png(two_runs, tmp_path, x):
    out = t5lab.plot_metrics(two_runs[0], ["val_loss", "train_loss"], out=tmp_path / f"m_{x}.png", x=x)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert [p.name for p in tmp_path.glob("*.png")] == [f"m_{x}.png"]  # no temp files left


def test_compare_table_closed_form(two_runs, tmp_path):
    result = t5lab.compare(list(two_runs), out=tmp_path / "c.png", measure_throughput=False)
    a, b = result.rows
    assert (a.variant, b.variant) == ("t5", "decoder_only")
    assert (a.best, a.best_step, b.best, b.best_step) == (1.2, 39, 1.9, 29)
    assert result.threshold == 1.9  # the worst best: a level every run reaches
    assert (a.steps_to_threshold, b.steps_to_threshold) == (29, 29)
    assert a.params > b.params > 0 and a.tokens_per_s is None
    assert "steps to thr" in str(result) and (tmp_path / "c.png").stat().st_size > 10_000
    result = t5lab.compare(list(two_runs), threshold=2.0, out=None, measure_throughput=False)
    assert [r.steps_to_threshold for r in result.rows] == [19, 29]


@pytest.mark.slow
def test_trained_runs_verify_and_compare(tmp_path):
    """End to end: `t5lab train` writes runs; the explorer reproduces their val_loss and compares them."""
    runs = [trained_run(tmp_path, "t5"), trained_run(tmp_path, "decoder_only", "model.options={prefix_lm: true}")]
    for path in runs:
        run = t5lab.load_run(path)
        check = run.verify_stable_load()
        assert math.isclose(check["recomputed"], check["stored"], rel_tol=1e-4)
        out = t5lab.sample(run.model, run.tokenizer, [r.input for r in run.splits["val"][:3]], max_new_tokens=4, temperature=0)
        assert len(out) == 3
    result = t5lab.compare(runs, out=tmp_path / "c.png")
    assert [r.variant for r in result.rows] == ["t5", "decoder_only"]
    assert all(r.tokens_per_s and r.tokens_per_s > 0 for r in result.rows)


def test_metrics_series_interpolates_samples_of_validation_rows():
    from t5lab.explore.run import MetricsTable

    rows = [
        {"step": 9, "samples": 320, "train_loss": 3.0},
        {"step": 15, "val_loss": 2.5},  # validation rows log no samples
        {"step": 19, "samples": 640, "train_loss": 2.8},
        {"step": 25, "val_loss": 2.0},
    ]
    table = MetricsTable(rows, ["step", "samples", "train_loss", "val_loss"])
    assert table.series("val_loss", x="samples") == ([512.0, 832.0], [2.5, 2.0])  # 32 samples per step
    assert table.series("val_loss") == ([15, 25], [2.5, 2.0])
    assert table.last("train_loss") == 2.8


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant, extra",
    [("pseudo_dec", []), ("gpt2", []), ("enct5", ["data.task=parity", "data.options={}"]),
     # validated under bf16 autocast: verify recomputes under it too (`auto` is this on AVX512/AMX CPUs)
     ("t5", ["train.precision=bf16-mixed"]), ("t5", ["train.precision=32"])],
    ids=["pseudo_dec", "gpt2", "enct5", "t5-bf16", "t5-fp32"],
)
def test_trained_runs_of_the_other_variants_verify(tmp_path, variant, extra):
    run = t5lab.load_run(trained_run(tmp_path, variant, *extra))
    check = run.verify_stable_load()
    assert math.isclose(check["recomputed"], check["stored"], rel_tol=1e-4)
    result = run.evaluate("val")
    assert ("accuracy" in result) == (variant == "enct5")


def test_exact_match_counts_records_whose_greedy_output_is_the_reference(two_runs, monkeypatch):
    """The bookkeeping of exact match: prompt/start stripped, compared up to the first </s>."""
    from t5lab.explore.formulate import exact_match_rate, run_formulation

    run = t5lab.load_run(two_runs[0])
    records = run.splits["val"][:7]
    form = run_formulation(run)
    targets = {tuple(e.prompt): e.target for e in form.encode_all(records)}  # target ends with </s>
    calls = []

    def fake_generate(input_ids, attention_mask, generation_config):
        calls.append(generation_config.max_new_tokens)
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            target = targets[tuple(i for i, m in zip(ids, mask) if m)]
            i = sorted(targets).index(tuple(i for i, m in zip(ids, mask) if m))
            hyp = target + [5, 5] if i % 2 == 0 else target[:-1] + [5]  # junk after </s> / a wrong end
            rows.append([0] + hyp)  # decoder start token first, as T5's generate returns it
        width = max(map(len, rows))
        return torch.tensor([r + [0] * (width - len(r)) for r in rows])

    monkeypatch.setattr(run.model, "generate", fake_generate)
    expected = sum(i % 2 == 0 for i in range(len(targets))) / len(records)
    assert exact_match_rate(run, records, batch_size=3) == pytest.approx(expected)
    assert len(calls) == 3  # batches of 3, 3 and 1
