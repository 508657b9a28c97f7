"""bench/gpu_t5_base.py runs end to end on CPU (a smoke test; its real figures need a CUDA GPU)."""

import importlib.util
import json
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
