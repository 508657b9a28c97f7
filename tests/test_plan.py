"""t5lab.plan: a config resolved once, every cross-section check made before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from t5lab.cli import main
from t5lab.config import load_config, load_plans, validate
from t5lab.errors import ConfigError
from t5lab.plan import Plan, resolve
from t5lab.variants import get_variant
from tests.train.conftest import tiny


def test_resolve_carries_variant_task_kind_and_objective():
    plan = resolve(validate(tiny(model={"variant": "decoder_only", "options": {"prefix_lm": True}})))
    assert isinstance(plan, Plan) and plan.variant is get_variant("decoder_only")
    assert plan.task.name == "copy" and plan.kind == "prefix_lm" and plan.objective is None
    assert plan.tokenizer.kind == "char"
    text = resolve(validate(tiny(data={"task": "botchan", "options": {}})))
    assert (text.kind, text.objective) == ("seq2seq", "span_corruption")
    cls = resolve(validate(tiny(model={"variant": "enct5"}, data={"task": "parity", "options": {}})))
    assert cls.kind == "classification" and cls.num_labels == 2


def test_sizes_are_checked_against_the_task_without_drawing():
    # copy over "abcd", 2-4 letters: 4**2 + 4**3 + 4**4 = 336 distinct examples
    with pytest.raises(ConfigError, match=r"data.train/val/test: task 'copy' has only 336 distinct examples"):
        resolve(validate(tiny(data={"train": 100000})))


def test_every_sweep_point_is_resolved_first():
    with pytest.raises(ConfigError, match=r"^sweep point 2/2 \(train=100000\): config key data.train/val/test"):
        load_plans(tiny(data={"train": [32, 100000]}))


def test_sweep_fails_before_any_run_dir(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny()))
    out = tmp_path / "runs"
    assert main(["train", str(config), "data.train=[32,100000]", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sweep point 2/2") and "\n" not in err
    assert not out.exists() or not any(out.rglob("*"))


@pytest.mark.parametrize("model_type", ["gpt2", "bert"])
def test_init_from_another_family_is_a_one_line_error(tmp_path, model_type):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "vocab_size": 10}))
    with pytest.raises(ConfigError) as err:
        load_config(tiny(model={"init_from": str(tmp_path)}))
    msg = str(err.value)
    assert msg.startswith(f"config key model.init_from={tmp_path}: it holds a '{model_type}' model") and "\n" not in msg


def test_label_names_must_be_a_list(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,x\nb,y\n")
    with pytest.raises(ConfigError, match=r"data.options.label_names='x,y': give a list"):
        load_config(tiny(model={"variant": "enct5"}, data={"task": str(data), "options": {"label_names": "x,y"},
                                                          "train": 1, "val": 1, "test": 0}))


def test_tokenizer_directory_must_hold_a_tokenizer(tmp_path):
    with pytest.raises(ConfigError, match="holds no saved tokenizer"):
        load_config(tiny(tokenizer=str(tmp_path)))


def test_validating_a_config_imports_neither_torch_nor_transformers():
    code = (
        "import sys\n"
        "import t5lab.config\n"
        "t5lab.config.load_config(None, ['model.variant=decoder_only'])\n"
        "from t5lab.cli import build_parser, main\n"
        "build_parser()\n"
        "rc = main(['train', 'train.lrr=1'])\n"
        "print(rc, sorted(m for m in ('torch', 'transformers', 'lightning') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split("\n")[-2] == "2 []", proc.stdout + proc.stderr
    assert proc.stderr.strip().startswith("error: unknown config key 'train.lrr'")


def test_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys\n"
        "from t5lab.cli import main\n"
        "for argv in (['--help'], ['train', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'lightning') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip().split("\n")[-1] == "[]", proc.stdout[-500:] + proc.stderr[-2000:]


def test_import_t5lab_then_transformers_registers_the_auto_classes():
    code = (
        "import t5lab, sys\n"
        "assert 'transformers' not in sys.modules\n"
        "from transformers import AutoConfig\n"
        "print(AutoConfig.for_model('t5_pseudo_dec').model_type)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "t5_pseudo_dec", proc.stderr[-2000:]


def _t5_dir(path, vocab_size):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": vocab_size}))
    return str(path)


def test_vocab_mismatch_of_a_later_sweep_point_fails_before_any_run_dir(tmp_path, capsys):
    # tiny(): char tokenizer over copy's alphabet "abcd": 3 specials + 4 characters + 100 sentinels
    fits, other = _t5_dir(tmp_path / "fits", 107), _t5_dir(tmp_path / "other", 50)
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny(model={"init_from": [fits, other]})))
    out = tmp_path / "runs"
    assert main(["train", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sweep point 2/2") and "\n" not in err, err
    assert f"model.init_from={other}: the model has a vocabulary of 50 tokens, the tokenizer 107" in err
    assert not out.exists() or not any(out.rglob("*"))
    assert len(load_plans(tiny(model={"init_from": [fits, other], "resize_embeddings": True}))) == 2
    # a size known only once the tokenizer is trained (unigram) is left to the run's own check
    resolve(validate(tiny(model={"init_from": other}, tokenizer={"kind": "unigram", "vocab_size": 40})))


def test_reverse_target_on_a_classification_task_is_a_one_line_error():
    cfg = validate(tiny(model={"variant": "enct5"}, data={"task": "parity", "options": {}, "reverse_target": True}))
    with pytest.raises(ConfigError, match=r"data.reverse_target=true: the 'parity' task has labels") as err:
        resolve(cfg)
    assert "\n" not in str(err.value)
    assert resolve(validate(tiny(data={"reverse_target": True}))).kind == "seq2seq"


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"model": {"variant": "enct5"}, "data": {"task": "parity", "options": {}}}, "the 'parity' task has labels"),
        ({"data": {"task": "botchan", "options": {}}}, "the text task 'botchan' has no input tokens to pair"),
        ({"data": {"reverse_target": True}}, "it pairs input token j with target token j, which data.reverse_target=true moves"),
    ],
)
def test_echo_input_where_it_cannot_pair_tokens_is_a_one_line_error(overrides, says):
    data = {**overrides.get("data", {}), "echo_input": True}
    cfg = validate(tiny(**{**overrides, "data": data}))
    with pytest.raises(ConfigError, match=rf"data.echo_input=true: {says}") as err:
        resolve(cfg)
    assert "\n" not in str(err.value) and str(err.value).endswith("set data.echo_input=false")
    assert resolve(validate(tiny(data={"echo_input": True}))).kind == "seq2seq"
