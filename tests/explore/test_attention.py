"""attention_maps(): probabilities (rows sum to 1), causal maps lower-triangular, PNG grids, ranges."""

from __future__ import annotations

import pytest
import torch

import t5lab
from t5lab.errors import T5LabError
from tests.explore.conftest import LM_FACTORIES, byte_tokenizer


@pytest.mark.parametrize("variant", ["t5", "pseudo_dec", "decoder_only", "gpt2"])
def test_rows_sum_to_one_and_self_attention_of_decoders_is_causal(variant):
    model, tokenizer = LM_FACTORIES[variant](), byte_tokenizer()
    impl = model.config._attn_implementation
    maps = t5lab.attention_maps(model, tokenizer, "hello", target="abcd" if model.config.is_encoder_decoder else None)
    assert model.config._attn_implementation == impl  # switched back after the eager pass
    expected = {"t5": {"encoder", "decoder", "cross"}, "pseudo_dec": {"decoder", "cross"}}
    assert set(maps.maps) == expected.get(variant, {"decoder"})
    for a in maps.maps.values():
        L, H = a.shape[:2]
        assert (L, H) == (2, 4)
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
    dec = maps["decoder"]  # (L, H, S, S)
    assert torch.all(dec.triu(diagonal=1) == 0)
    assert dec.tril(diagonal=-1).sum() > 0  # and not trivially diagonal


def test_prefix_lm_prompt_attends_both_ways():
    model, tokenizer = LM_FACTORIES["prefix_lm"](), byte_tokenizer()
    maps = t5lab.attention_maps(model, tokenizer, "hello")
    assert maps["decoder"][1, :, 0, -1].min() > 0  # in layer 1 the first prompt token sees the last one


def test_layer_and_head_selection_and_pngs(tmp_path):
    model, tokenizer = LM_FACTORIES["t5"](), byte_tokenizer()
    full = t5lab.attention_maps(model, tokenizer, "hi you", target="ok")
    maps = t5lab.attention_maps(model, tokenizer, "hi you", layers=[1], heads=[0, 2], target="ok", out_dir=tmp_path)
    assert maps["cross"].shape == (1, 2, 3, 7)  # start + "ok" + </s>... queries = shift_right(labels)
    torch.testing.assert_close(maps["encoder"][0], full["encoder"][1, [0, 2]])
    names = sorted(p.name for p in maps.files)
    assert names == ["cross_layer1.png", "decoder_layer1.png", "encoder_layer1.png"]
    for path in maps.files:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_out_of_range_layers_and_heads_are_clear_errors():
    model, tokenizer = LM_FACTORIES["t5"](), byte_tokenizer()
    with pytest.raises(T5LabError, match=r"layer \[5\] out of range: the model has layers 0..1"):
        t5lab.attention_maps(model, tokenizer, "hi", layers=[5])
    with pytest.raises(T5LabError, match=r"head \[4\] out of range"):
        t5lab.attention_maps(model, tokenizer, "hi", heads=[4])
