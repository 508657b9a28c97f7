"""Activation patching and causal tracing: clean into clean does nothing, patching everything gives
the corrupt run, per-position effects add up, heads add up to the attention output, bad input is one line."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from t5lab.errors import T5LabError
from t5lab.explore.patching import Patch, causal_trace, patch, run_patched, target_logprob
from tests.explore.conftest import LM_FACTORIES

CLEAN = [5, 6, 7, 8, 9, 1]
CORRUPT = [5, 6, 30, 31, 9, 1]
TARGET = [9, 8, 7, 1]


def _pair(variant: str):
    """(model, clean inputs, corrupt inputs) of one example; labels = the target."""
    model = LM_FACTORIES[variant]()
    if variant in ("t5", "pseudo_dec"):
        labels = torch.tensor([TARGET])
        return model, {"input_ids": torch.tensor([CLEAN]), "labels": labels}, {"input_ids": torch.tensor([CORRUPT]), "labels": labels}
    labels = torch.tensor([[-100] * len(CLEAN) + TARGET])
    return (
        model,
        {"input_ids": torch.tensor([CLEAN + TARGET]), "labels": labels},
        {"input_ids": torch.tensor([CORRUPT + TARGET]), "labels": labels},
    )


@pytest.mark.parametrize("variant", ["t5", "pseudo_dec", "decoder_only"])
def test_clean_into_clean_is_zero_effect(variant):
    model, clean, _ = _pair(variant)
    result = patch(model, clean, clean, ["resid_post", "heads", "mlp_out"])
    assert result.rows and result.receiver == result.source
    for row in result.rows:
        assert row.value == pytest.approx(result.receiver, abs=1e-5)


@pytest.mark.parametrize("variant", ["t5", "pseudo_dec", "decoder_only"])
def test_patching_everything_gives_the_corrupt_output(variant):
    model, clean, corrupt = _pair(variant)
    with torch.no_grad():
        want = model(**corrupt).logits
        assert not torch.allclose(model(**clean).logits, want)
    last = f"decoder.blocks.{len(model.get_decoder().block) - 1}.hook_resid_post"
    assert_close(run_patched(model, clean, corrupt, [last]).logits, want)
    if variant != "decoder_only":  # everything the decoder reads from the input
        assert_close(run_patched(model, clean, corrupt, ["encoder.ln_final.hook_normalized"]).logits, want)
    # every position of the first block's input: the same as feeding the corrupt tokens
    first = ["encoder.hook_embed"] if variant != "decoder_only" else ["decoder.blocks.0.hook_resid_pre"]
    assert_close(run_patched(model, clean, corrupt, first).logits, want)


@pytest.mark.parametrize("variant", ["t5", "decoder_only"])
def test_per_position_effects_add_up_at_the_last_layer(variant):
    """At the last block each position only feeds its own logits: with a summed metric the
    per-position patches add up to the whole corrupt-minus-clean difference."""
    model, clean, corrupt = _pair(variant)
    metric = target_logprob(clean["labels"], causal=variant == "decoder_only", reduce="sum")
    result = patch(model, clean, corrupt, ["decoder.resid_post"], metric)
    layers = len(model.get_decoder().block)
    last = [r for r in result.rows if r.layer == layers - 1]
    assert len(last) == clean["labels"].shape[1] if variant == "t5" else len(CLEAN) + len(TARGET)
    total = sum(r.value - result.receiver for r in last)
    assert total == pytest.approx(result.source - result.receiver, rel=1e-4, abs=1e-5)
    assert sum(r.effect for r in last) == pytest.approx(1.0, rel=1e-4)


def test_heads_add_up_to_the_attention_output_and_denoising():
    model, clean, corrupt = _pair("t5")
    heads = [Patch("decoder.blocks.1.cross_attn.hook_z", None, h) for h in range(4)]
    whole = run_patched(model, clean, corrupt, ["decoder.blocks.1.cross_attn.hook_attn_out"]).logits
    assert_close(run_patched(model, clean, corrupt, heads).logits, whole, atol=1e-5, rtol=1e-5)
    noising = patch(model, clean, corrupt, ["decoder.cross_heads"])
    denoising = patch(model, clean, corrupt, ["decoder.cross_heads"], denoise=True)
    assert (noising.receiver, noising.source) == (denoising.source, denoising.receiver)
    grid, rows, cols = noising.grid("decoder", "cross_heads")
    assert grid.shape == (2, 4) and rows == ["L0", "L1"] and cols == ["H0", "H1", "H2", "H3"]


def test_table_and_heatmaps(tmp_path):
    model, clean, corrupt = _pair("t5")
    tokens = {"encoder": [f"t{i}" for i in CLEAN], "decoder": ["<s>", "a", "b", "c"]}
    result = patch(model, clean, corrupt, tokens=tokens)
    assert {c for _, c in result.panels()} == {"resid_post", "attn_out", "cross_attn_out", "mlp_out", "heads", "cross_heads"}
    grid, rows, cols = result.grid("encoder", "resid_post")
    assert grid.shape == (2, len(CLEAN)) and cols[2] == "2:t7"
    text = result.table(5)
    assert text.startswith("clean metric") and len(text.splitlines()) == 7
    files = result.heatmaps(tmp_path / "out")
    assert sorted(f.name for f in files) == ["patch_decoder.png", "patch_encoder.png"]
    assert all(f.stat().st_size > 5_000 for f in files)


def test_bad_input_is_one_line():
    model, clean, corrupt = _pair("t5")
    longer = {**corrupt, "input_ids": torch.tensor([CORRUPT + [9]])}
    with pytest.raises(T5LabError, match="same token length") as err:
        patch(model, clean, longer, ["resid_post"])
    assert "\n" not in str(err.value)
    with pytest.raises(T5LabError, match="unknown component 'resid'"):
        patch(model, clean, corrupt, ["resid"])
    with pytest.raises(T5LabError, match="no 'encoder' stack"):
        patch(LM_FACTORIES["decoder_only"](), *_pair("decoder_only")[1:], ["encoder.resid_post"])
    with pytest.raises(T5LabError, match="no labels"):
        patch(model, {"input_ids": clean["input_ids"], "decoder_input_ids": clean["labels"]}, corrupt)


@pytest.mark.parametrize("variant", ["t5", "decoder_only"])
def test_causal_trace_restores_the_clean_run(variant):
    model, clean, _ = _pair(variant)
    result = causal_trace(model, clean, [2, 3], ["resid_post", "mlp_out"], samples=4)
    assert result.receiver != pytest.approx(result.source, abs=1e-7)  # the noise changes the metric
    layers = {s: len(m.block) for s, m in [("decoder", model.get_decoder())]}
    rows = [r for r in result.rows if r.stack == "decoder" and r.component == "resid_post"]
    decoder_length = clean["labels" if variant == "t5" else "input_ids"].shape[1]
    assert len(rows) == layers["decoder"] * decoder_length
    # the metric is a mean over target positions and each last-layer position feeds only its own
    # logits: restoring them one at a time adds up to the whole clean - noised difference
    last = [r.value - result.receiver for r in rows if r.layer == layers["decoder"] - 1]
    assert sum(last) == pytest.approx(result.source - result.receiver, rel=1e-4, abs=1e-7)
    quiet = causal_trace(model, clean, [2, 3], ["resid_post"], samples=2, noise=0.0)
    assert quiet.receiver == pytest.approx(quiet.source) and all(r.value == pytest.approx(quiet.source) for r in quiet.rows)
    if variant == "t5":
        enc = [r for r in result.rows if r.stack == "encoder" and r.component == "resid_post" and r.layer == 1]
        assert len(enc) == len(CLEAN)
    with pytest.raises(T5LabError, match="within"):
        causal_trace(model, clean, [99])
    with pytest.raises(T5LabError, match="batch 1"):
        causal_trace(model, {k: v.repeat(2, 1) for k, v in clean.items()}, [1])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests.explore.runs import hand_made_run

    return hand_made_run(tmp_path_factory.mktemp("runs"), "interp", "t5", [3.0, 2.5], [9, 19])


def test_patch_and_causal_trace_cli(run_dir, capsys, tmp_path):
    from t5lab.cli import main
    from t5lab.explore import interp_cli, patching

    assert interp_cli.COMPONENTS == tuple(patching.COMPONENTS)  # spelled out there for a torch-free --help
    assert interp_cli.DEFAULT_COMPONENTS == patching.DEFAULT_COMPONENTS

    code = main(["patch", str(run_dir), "--clean", "abcd", "--corrupt", "abce", "--target", "dcba", "--out", str(tmp_path / "p"),
                 "--components", "decoder.cross_heads", "encoder.resid_post", "--top", "4"])
    out = capsys.readouterr().out
    assert code == 0 and "clean metric" in out and "cross_heads" in out and "effect" in out
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["patch_decoder.png", "patch_encoder.png"]
    code = main(["causal-trace", str(run_dir), "--text", "abcd", "--target", "dcba", "--noise", "1", "--samples", "2",
                 "--out", str(tmp_path / "t")])
    assert code == 0 and "noised metric" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["trace_decoder.png", "trace_encoder.png"]
    code = main(["patch", str(run_dir), "--clean", "abcd", "--corrupt", "abcde", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: clean and corrupt input_ids have shapes (1, 5) and (1, 6)")
    assert not (tmp_path / "bad").exists()  # nothing half-written


def test_encode_pairs_batches_and_head_grids(tmp_path):
    from t5lab.explore.patching import encode_pairs, plot_head_grids
    from tests.explore.conftest import byte_tokenizer

    model, tokenizer = LM_FACTORIES["decoder_only"](), byte_tokenizer()
    batch = encode_pairs(model, tokenizer, [("ab", "ba"), ("cd", "dc")])
    # `ab </s> ba </s>`, labels on the target only (as training encodes a decoder-only pair)
    assert batch["input_ids"].shape == (2, 6) and (batch["labels"][:, :3] == -100).all()
    assert batch["labels"][0, 3:].tolist() == batch["input_ids"][0, 3:].tolist()
    with pytest.raises(T5LabError, match="at least one"):
        encode_pairs(model, tokenizer, [])
    path = plot_head_grids({"a": torch.rand(2, 4), "b": torch.rand(2, 4)}, tmp_path / "g.png", "title")
    assert path.stat().st_size > 5_000


@pytest.mark.parametrize("variant", ["enct5", "t5_value", "decoder_only_value"])
def test_patching_other_variants_with_a_metric(variant):
    from tests.explore.test_hooks import FACTORIES

    model = FACTORIES[variant]()
    if variant == "enct5":
        clean, corrupt = {"input_ids": torch.tensor([CLEAN])}, {"input_ids": torch.tensor([CORRUPT])}
    else:
        _, clean, corrupt = _pair("t5" if variant == "t5_value" else "decoder_only")

    def metric(out):  # a classifier's first logit; a value head's mean value
        if variant == "enct5":
            return out.logits[:, 0].mean()
        return (out.get("value") if out.get("value") is not None else out["values"]).mean()

    result = patch(model, clean, corrupt, ["resid_post", "heads"], metric)
    with torch.no_grad():
        assert result.source == pytest.approx(float(metric(model(**corrupt))))
    last = f"decoder.blocks.{len(model.get_decoder().block) - 1}.hook_resid_post"
    assert float(metric(run_patched(model, clean, corrupt, [last]))) == pytest.approx(result.source, abs=1e-5)
