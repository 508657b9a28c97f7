"""``t5lab train`` imports only what the run needs before training starts (issue 13).

A subprocess runs ``t5lab train`` on the quickstart config up to ``Trainer.fit`` (patched to
record ``sys.modules`` and exit), and another imports the floor every run pays for anyway:
torch, Lightning (which itself imports torchmetrics, transformers, matplotlib, torch._dynamo and
sympy at its top level) and transformers' T5. What ``t5lab train`` adds beyond that floor must be
t5lab's own modules and the few packages the config schema and timing need; named heavy modules
(the explorer, RL, study, tensorboard, wandb, pandas, ...) must be absent. Someone who adds a
top-level import of one of them to a module on the training path makes this test fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[2] / "src" / "t5lab" / "configs" / "quickstart.yaml"

# the training path: everything `t5lab train` runs before Trainer.fit, fit itself replaced
TRAIN_PATH = """
import json, sys
import lightning.pytorch as pl

def fit(self, *args, **kwargs):
    json.dump(sorted(sys.modules), open(sys.argv[1], "w"))
    raise SystemExit(0)

pl.Trainer.fit = fit
from t5lab.cli import main
sys.exit(main(["train", sys.argv[2], "data.train=64", "data.val=8", "data.test=8", "--out", sys.argv[3], "--no-progress"]))
"""

# what any run of a T5 under Lightning imports, whatever t5lab does
FLOOR = """
import json, sys
import lightning.pytorch, torch, transformers
from transformers import T5Config, T5ForConditionalGeneration
T5ForConditionalGeneration(T5Config(d_model=8, d_ff=8, d_kv=4, num_heads=2, num_layers=1, vocab_size=8))
json.dump(sorted(sys.modules), open(sys.argv[1], "w"))
"""

# third-party packages the training path may add to the floor: the config schema (pydantic, yaml),
# the process start time (psutil), and fsspec's local files (Lightning's checkpoint paths)
ALLOWED_EXTRA = {"pydantic", "pydantic_core", "annotated_types", "typing_inspection", "yaml", "psutil", "fsspec"}

# packages of t5lab a plain training run never uses: only their `cli` modules (argparse
# sub-commands, no heavy imports) may load; the rest is imported where used
T5LAB_LAZY_PACKAGES = ("t5lab.explore", "t5lab.rl", "t5lab.study", "t5lab.bench")
T5LAB_ALLOWED_IN_LAZY = {
    "t5lab.explore", "t5lab.explore.cli", "t5lab.explore.interp_cli", "t5lab.rl", "t5lab.rl.cli",
    "t5lab.study", "t5lab.study.cli",
    # importing t5lab.bench.cli runs the package's __init__, which imports bench.core (statistics, time)
    "t5lab.bench", "t5lab.bench.cli", "t5lab.bench.core",
}
T5LAB_NEVER = ("t5lab.pipelines", "t5lab.train.progress")  # progress: --no-progress shows no bar

# heavy modules no quickstart run needs (most are not installed in this venv; tensorboard and networkx
# are). Not listed: matplotlib.pyplot, torch._dynamo, sympy and accelerate, which Lightning (via
# torchmetrics) and transformers' modeling_utils import at their own top level, in the floor.
THIRD_PARTY_NEVER = (
    "tensorboard", "wandb", "pandas", "datasets", "scipy", "sklearn", "seaborn", "IPython", "networkx",
    "torchvision", "deepspeed", "torch._inductor.compile_fx",
)
# transformers' model files: the T5 the quickstart trains, the Auto classes, and encoder_decoder
# (imported by torchmetrics' BERTScore, which Lightning imports at its top level)
TRANSFORMERS_MODELS = {"auto", "t5", "encoder_decoder"}


def unexpected(modules: set[str], floor: set[str]) -> list[str]:
    """The modules of ``modules`` a plain quickstart run should not have imported before training."""
    bad = []
    for name in sorted(modules):
        top = name.split(".")[0]
        if name.startswith(T5LAB_LAZY_PACKAGES) and name not in T5LAB_ALLOWED_IN_LAZY:
            bad.append(name)
        elif name in T5LAB_NEVER or any(name == m or name.startswith(m + ".") for m in THIRD_PARTY_NEVER):
            bad.append(name)
        elif name.startswith("transformers.models.") and name.split(".")[2] not in TRANSFORMERS_MODELS and name not in floor:
            bad.append(name)  # (transformers 5.20 itself imports every image processor at top level: in the floor)
        elif name not in floor and top != "t5lab" and top not in ALLOWED_EXTRA and top not in sys.stdlib_module_names:
            bad.append(name)  # a third-party package the floor does not import
    return bad


def _modules(code: str, *args: str) -> set[str]:
    out = Path(args[0])
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-1000:] + proc.stderr[-3000:]
    return set(json.loads(out.read_text()))


def test_the_check_finds_what_a_run_should_not_import():
    floor = {"torch", "lightning", "transformers", "transformers.models.t5"}
    ok = floor | {"t5lab.train.run", "t5lab.explore.cli", "pydantic.main", "yaml", "json", "t5lab.bench.core"}
    assert unexpected(ok, floor) == []
    bad = {"t5lab.explore.plots", "t5lab.rl.ppo", "t5lab.study.runner", "t5lab.bench.cases", "t5lab.pipelines",
           "tensorboard.summary", "pandas", "torch._inductor.compile_fx", "transformers.models.gpt2.modeling_gpt2",
           "some_new_package"}
    assert unexpected(ok | bad, floor) == sorted(bad)


def test_t5lab_train_imports_nothing_heavy_before_training(tmp_path):
    floor = _modules(FLOOR, str(tmp_path / "floor.json"))
    run = _modules(TRAIN_PATH, str(tmp_path / "run.json"), str(QUICKSTART), str(tmp_path / "runs"))
    assert "t5lab.train.module" in run and "lightning.pytorch" in run  # the probe reached the Trainer
    assert not unexpected(run, floor), f"imported before training, not needed by a quickstart run: {unexpected(run, floor)}"
    # every named heavy package this venv has is checked (a name not installed cannot be imported)
    installed = [m for m in ("tensorboard", "networkx") if importlib.util.find_spec(m) is not None]
    assert installed, "none of the named heavy packages is installed: the check above tests nothing third-party"


@pytest.mark.parametrize(
    "code,absent",
    [
        ("import t5lab", ("torch", "transformers", "lightning", "pydantic", "t5lab.models", "t5lab.config")),
        ("import t5lab.train, t5lab.train.cli", ("torch", "transformers", "lightning", "t5lab.train.run")),
    ],
)
def test_importing_the_package_loads_nothing_heavy(code, absent):
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}; import sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not [m for m in absent if m in loaded], f"{code!r} imported {[m for m in absent if m in loaded]}"
