"""bench/gpu_t5_base.py runs end to end on CPU (a smoke test; its real figures need a CUDA GPU)."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "bench" / "gpu_t5_base.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_t5_base", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_script_smoke_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    # the documented smoke flags; 1+1 layers of T5-base width keep it to seconds
    _script().main(["--steps", "1", "--batch", "2", "--seq", "32", "--device", "cpu", "--num-layers", "1",
                    "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["target_len"] == 7 and result["batch"] == 2 and result["micro_batch"] == 2
    assert result["s_per_step"] > 0 and 0 < result["mfu"] < 1.5
    assert result["bf16"] is False and result["compile"] is False and result["attn"] == "sdpa"
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_gpu_script_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit, match="multiple of --micro-batch"):
        _script().main(["--batch", "6", "--micro-batch", "4", "--device", "cpu"])
    with pytest.raises(SystemExit):
        _script().main(["--steps", "0"])
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_flex_wrapper_hands_transformers_a_batch_sized_position_bias(monkeypatch):
    """transformers' flex score_mod indexes the bias by batch: T5's (1, H, Q, K) bias must be expanded."""
    import torch
    import transformers.integrations.flex_attention as flex

    seen = {}

    def fake_flex(module, query, key, value, attention_mask, position_bias=None, **kwargs):
        seen["bias"] = position_bias
        return query, None

    monkeypatch.setattr(flex, "flex_attention_forward", fake_flex)
    query = torch.zeros(3, 4, 5, 8)  # (B, H, Q, dk)
    bias = torch.randn(1, 4, 5, 6)  # (1, H, Q, K), as T5Attention.compute_bias returns it
    _script().t5_flex_attention(None, query, query, query, None, position_bias=bias)
    assert seen["bias"].shape == (3, 4, 5, 6) and torch.equal(seen["bias"][2], bias[0])
    _script().t5_flex_attention(None, query, query, query, None, position_bias=None)
    assert seen["bias"] is None


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("T5LAB_TEST_FLEX"), reason="flex attention compiles for ~1 min on CPU; T5LAB_TEST_FLEX=1")
def test_flex_with_the_wrapper_equals_sdpa_for_a_batch(monkeypatch):
    """Reference: sdpa on the same T5. Without the wrapper transformers' flex path fails for batch 2."""
    import torch
    from transformers import AttentionInterface, T5Config, T5ForConditionalGeneration

    monkeypatch.setitem(AttentionInterface._global_mapping, "flex_attention",
                        AttentionInterface._global_mapping["flex_attention"])  # restored after the test
    config = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, dropout_rate=0.0,
                      decoder_start_token_id=0)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config).eval()
    ids, labels = torch.randint(2, 64, (2, 16)), torch.randint(2, 64, (2, 16))
    with torch.no_grad():
        expected = model(input_ids=ids, labels=labels).logits
        model.set_attn_implementation("flex_attention")
        with pytest.raises(RuntimeError, match="out of bounds"):
            model(input_ids=ids, labels=labels)
        _script().use_t5_flex_attention()
        torch.testing.assert_close(model(input_ids=ids, labels=labels).logits, expected, rtol=1e-4, atol=1e-5)
