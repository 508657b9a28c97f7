"""Logit lens and direct logit attribution: the last layer's lens is the model's logits, the
contributions add up to the target logit, per-head shares add up to their attention component."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from t5lab.errors import T5LabError
from t5lab.explore.lens import direct_logit_attribution, logit_lens, output_scale
from tests.explore.test_hooks import FACTORIES
from tests.explore.test_patching import _pair

LM_VARIANTS = ["t5", "pseudo_dec", "decoder_only", "t5_gated", "t5_value", "decoder_only_value"]


def _example(variant: str):
    base = {"t5_value": "t5", "t5_gated": "pseudo_dec", "decoder_only_value": "decoder_only"}.get(variant, variant)
    _, clean, _ = _pair(base)
    return FACTORIES[variant](), clean


@pytest.mark.parametrize("variant", LM_VARIANTS)
def test_last_layer_lens_is_the_model(variant):
    model, inputs = _example(variant)
    lens = logit_lens(model, inputs, vocab=[f"t{i}" for i in range(300)])
    with torch.no_grad():
        want = torch.log_softmax(model(**inputs).logits[0].float(), -1)
    assert lens.layers == ["embed", "L0", "L1"]
    assert_close(lens.logprobs[-1], want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(lens.logprobs[0], want, atol=1e-3)
    scored = lens.targets >= 0
    assert_close(lens.target_logprobs[-1][scored], want[scored].gather(-1, lens.targets[scored][:, None])[:, 0])
    assert len(lens.table().splitlines()) == 4


@pytest.mark.parametrize("variant", LM_VARIANTS)
def test_attributions_add_up_to_the_logit(variant):
    model, inputs = _example(variant)
    dla = direct_logit_attribution(model, inputs)
    scored = dla.targets >= 0
    assert scored.sum() == 4  # the target tokens
    assert_close(dla.contributions.sum(0), dla.logit, atol=1e-4, rtol=1e-4)
    for name, per_head in dla.heads.items():
        assert_close(per_head.sum(0), dla.contributions[dla.components.index(name)], atol=1e-5, rtol=1e-4)
    kinds = {c.split(".")[-1] for c in dla.components}
    assert kinds == ({"embed", "attn", "mlp"} if "decoder_only" in variant else {"embed", "attn", "cross_attn", "mlp"})
    diff = direct_logit_attribution(model, inputs, target=7, baseline=8)
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    assert_close(diff.contributions.sum(0), logits[:, 7] - logits[:, 8], atol=1e-4, rtol=1e-4)


def test_output_scale_follows_the_config():
    model, _ = _example("t5")
    assert output_scale(model) == pytest.approx(32**-0.5)
    model.config.scale_decoder_outputs = False
    assert output_scale(model) == 1.0


def test_plots_and_errors(tmp_path):
    model, inputs = _example("t5")
    lens = logit_lens(model, inputs, tokens=["<s>", "a", "b", "c"])
    dla = direct_logit_attribution(model, inputs)
    assert lens.heatmap(tmp_path / "lens.png").stat().st_size > 5_000
    assert dla.plot(tmp_path / "dla.png").stat().st_size > 5_000
    assert dla.table().startswith("target logit") and "H3" in dla.table(position=1)
    with pytest.raises(T5LabError, match="out of range"):
        dla.table(position=9)
    with pytest.raises(T5LabError, match="batch 1"):
        logit_lens(model, {k: v.repeat(2, 1) for k, v in inputs.items()})
    with pytest.raises(T5LabError, match="give labels"):
        logit_lens(model, {"input_ids": inputs["input_ids"], "decoder_input_ids": inputs["labels"]})
    with pytest.raises(T5LabError, match="no LM head"):
        logit_lens(FACTORIES["enct5"](), {"input_ids": inputs["input_ids"], "labels": torch.tensor([1])})


def test_lens_cli(tmp_path, capsys):
    from t5lab.cli import main
    from tests.explore.runs import hand_made_run

    run_dir = hand_made_run(tmp_path / "runs", "lens", "decoder_only", [3.0], [9])
    code = main(["lens", str(run_dir), "--text", "abcd", "--target", "dcba", "--position", "5"])
    out = capsys.readouterr().out
    assert code == 0 and "logit lens" in out and "direct logit attribution" in out and "L1.attn" in out
    assert sorted(p.name for p in (run_dir / "interp").iterdir()) == ["dla.png", "lens.png"]
