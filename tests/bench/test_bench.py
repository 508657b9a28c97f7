"""The bench's arithmetic and the fast path's correctness (no timed assertions here)."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import T5ForConditionalGeneration

from t5lab.bench.cases import lm_batch, t5_config, t5_train_flops
from t5lab.bench.core import Comparison, interleaved


def test_interleaved_rotates_order_and_counts_calls():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    m = interleaved(fns, {"a": 1, "b": 2, "c": 3}, "tokens", repeats=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:6] == ["a", "b", "c"] and calls[6:9] == ["b", "c", "a"] and calls[9:] == ["c", "a", "b"]
    assert all(len(x.seconds) == 3 for x in m.values())
    assert m["c"].work_per_call == 3


def test_comparison_ratio_direction():
    faster = Comparison("x", "cand", "ref", "tokens/s", 300.0, 100.0, ">= 1x")
    assert faster.ratio == pytest.approx(3.0)
    lower_ms = Comparison("x", "cand", "ref", "ms/token", 5.0, 10.0, "<= 1x", higher_is_better=False)
    assert lower_ms.ratio == pytest.approx(2.0) and lower_ms.raw_ratio == pytest.approx(0.5)


def test_flop_formula_matches_torch_flop_counter():
    cfg = t5_config("tiny")
    model = T5ForConditionalGeneration(cfg)
    batch = lm_batch("hf_t5", cfg.vocab_size, batch=2, src_len=16, tgt_len=8)
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    counted = counter.get_total_flops()
    predicted = t5_train_flops(cfg, batch=2, src_len=16, tgt_len=8)
    # the counter sees only matmuls too; backward of the embedding lookup is not a matmul
    assert predicted == pytest.approx(counted, rel=0.05)


def test_bf16_autocast_close_to_fp32():
    cfg = t5_config("tiny")
    model = T5ForConditionalGeneration(cfg).eval()
    batch = lm_batch("hf_t5", cfg.vocab_size, batch=2, src_len=12, tgt_len=6)
    with torch.no_grad():
        ref = model(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model(**batch)
    # bf16 keeps 8 mantissa bits: logits agree to about 2% of their scale, losses to 1%
    scale = ref.logits.abs().max()
    assert (fast.logits.float() - ref.logits).abs().max() < 0.05 * scale
    assert fast.loss.float() == pytest.approx(ref.loss.item(), rel=0.01)


@pytest.mark.slow
def test_compiled_model_matches_eager():
    cfg = t5_config("tiny", num_layers=1)
    model = T5ForConditionalGeneration(cfg).eval()
    batch = lm_batch("hf_t5", cfg.vocab_size, batch=2, src_len=8, tgt_len=4)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(**batch).logits, model(**batch).logits, rtol=1e-4, atol=1e-4)


def test_record_rows_have_no_ratio_and_format_as_dashes():
    from t5lab.bench import format_row, markdown_table

    rec = Comparison("copy_time", "quickstart+copy", "-", "s", 12.5, None, "record", higher_is_better=False)
    assert rec.ratio is None and rec.raw_ratio is None
    assert format_row(rec)[5:7] == ["-", "-"]
    table = markdown_table([rec, Comparison("x", "a", "b", "tokens/s", 3.0, 2.0, ">= 1.0x")])
    assert table.splitlines()[-1] == "| x | a | b | tokens/s | 3 | 2 | 1.50x | >= 1.0x |"


def test_unknown_case_is_a_one_line_error(tmp_path):
    from t5lab.bench import run_bench
    from t5lab.cli import main
    from t5lab.errors import T5LabError

    with pytest.raises(T5LabError, match="unknown bench case"):
        run_bench(["nope"], out=tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()
    assert main(["bench", "nope", "--out", str(tmp_path / "b.json")]) == 2


@pytest.mark.slow
def test_overhead_case_runs_the_harness_and_the_plain_loop(tmp_path):
    import json

    from t5lab.bench import run_bench

    torch.set_num_threads(1)
    out = tmp_path / "bench.json"
    [row] = run_bench(["overhead"], repeats=1, out=out, overhead={"batch": 4, "steps": 3})
    assert row.case == "overhead" and row.candidate_value > 0 and row.reference_value > 0
    assert row.extra["bucketing"] is True and row.extra["fused_adamw"] is True
    assert row.extra["padding_fraction_harness"] < row.extra["padding_fraction_plain"]
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["ratio"] == pytest.approx(row.ratio)


def test_logits_to_keep_saves_exactly_the_lm_head_on_the_dropped_positions():
    """Closed form: the decoder_only rows differ only by the LM head (2 d V FLOPs per token, x3 with
    backward) on the src_len - 1 positions whose logits predict no target."""
    from t5lab.bench.cases import build_lm, count_flops

    cfg = t5_config("tiny")
    b, src, tgt = 2, 12, 6
    model = build_lm("decoder_only", "tiny").train()
    batch = lm_batch("decoder_only", cfg.vocab_size, b, src, tgt)
    full = count_flops(lambda: model(**batch).loss.backward())
    kept = count_flops(lambda: model(**batch, logits_to_keep=tgt + 1).loss.backward())
    assert full - kept == 3 * 2 * b * (src - 1) * cfg.d_model * cfg.vocab_size


def test_lm_training_case_reports_both_decoder_only_rows():
    from t5lab.bench.cases import lm_training

    rows = lm_training("tiny", batch=2, src_len=8, tgt_len=4, repeats=1)
    by_name = {r.candidate: r for r in rows}
    assert set(by_name) == {"pseudo_dec", "decoder_only", "decoder_only+logits_to_keep"}
    assert all(r.candidate_value > 0 and r.reference_value > 0 for r in rows)
    full, kept = by_name["decoder_only"].extra, by_name["decoder_only+logits_to_keep"].extra
    assert kept["train_flops"] < full["train_flops"] and kept["flop_ratio"] > full["flop_ratio"]
    assert full["reference_train_flops"] == kept["reference_train_flops"]


def test_enct5_case_reports_flops_and_the_encoder_ceiling():
    from t5lab.bench.cases import enct5_vs_t5_classification

    train, infer = enct5_vs_t5_classification("tiny", batch=2, seq_len=16, repeats=1)
    assert (train.case, infer.case) == ("enct5_train", "enct5_infer")
    for row in (train, infer):
        assert row.extra["flop_ratio"] == pytest.approx(row.extra["reference_flops"] / row.extra["flops"])
        assert row.extra["flop_ratio"] > 1  # one decoder layer over one prompt vs the full decoder
    assert infer.extra["encoder_only_ratio"] > 0


def test_hooks_case_times_the_same_model_with_and_without_an_empty_hooks_block():
    from t5lab.bench.cases import hooks_overhead

    rows = hooks_overhead(shape="tiny", batch=2, src_len=6, tgt_len=4, repeats=1, variants=("hf_t5", "decoder_only"))
    assert [r.candidate for r in rows] == ["hf_t5+empty_hooks", "decoder_only+empty_hooks"]
    assert [r.reference for r in rows] == ["hf_t5", "decoder_only"]
    assert all(r.candidate_value > 0 and r.reference_value > 0 and r.ratio > 0 for r in rows)
