"""ExperimentConfig: YAML + overrides, sweeps, and one-line errors for every kind of bad input."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from t5lab.config import (
    ExperimentConfig,
    Section,
    apply_overrides,
    expand_sweep,
    fix_floats,
    load_config,
    load_sweep,
    one_line,
    parse_override,
    read_yaml,
)
from t5lab.errors import ConfigError


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = load_config()
    assert isinstance(cfg, ExperimentConfig)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again.to_dict() == {**cfg.to_dict(), "name": "run"}


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"model": {"d_model": 32}, "train": {"lr": "1e-3"}}))
    cfg = load_config(path, ["train.lr=3e-4", "model.variant=gpt2", "data.options.max_len=6", "tokenizer=byte"])
    assert cfg.name == "exp"  # from the file name
    assert cfg.model.d_model == 32 and cfg.model.variant == "gpt2"
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.data.options == {"max_len": 6}
    assert cfg.tokenizer.kind == "byte"


def test_override_values_are_yaml():
    assert parse_override("train.max_epochs=3") == (["train", "max_epochs"], 3)
    assert parse_override("model.d_model=[32, 64]") == (["model", "d_model"], [32, 64])
    assert parse_override("train.early_stop=null") == (["train", "early_stop"], None)
    assert parse_override("train.lr=1e-3")[1] == pytest.approx(1e-3)


def test_sweep_is_cartesian_product_and_names_points():
    raw = {"model": {"d_model": [32, 64]}, "train": {"lr": [1e-3, 3e-4], "max_steps": 5}}
    points = expand_sweep(raw)
    assert len(points) == 4
    assert [s for _, s in points] == ["d_model=32,lr=0.001", "d_model=32,lr=0.0003", "d_model=64,lr=0.001", "d_model=64,lr=0.0003"]
    assert points[3][0]["model"]["d_model"] == 64 and points[3][0]["train"]["lr"] == 3e-4
    cfgs = load_sweep(raw)
    assert [c.model.d_model for c, _ in cfgs] == [32, 32, 64, 64]


def test_betas_flat_list_is_a_value_nested_is_a_sweep():
    assert len(load_sweep({"train": {"betas": [0.9, 0.98]}})) == 1
    assert len(load_sweep({"train": {"betas": [[0.9, 0.98], [0.9, 0.999]]}})) == 2


def test_nested_list_in_options_is_one_literal_value():
    points = expand_sweep({"data": {"options": {"alphabet": [["a", "b"]]}}})
    assert len(points) == 1 and points[0][0]["data"]["options"]["alphabet"] == ["a", "b"]


def test_load_config_refuses_a_sweep():
    with pytest.raises(ConfigError, match="is a sweep"):
        load_config({"train": {"lr": [1e-3, 1e-4]}})


BAD = [
    ({"train": {"lrr": 1}}, "train.lrr"),
    ({"modle": {}}, "modle"),
    ({"model": {"d_model": "big"}}, "model.d_model"),
    ({"model": {"variant": "t6"}}, "model.variant"),
    ({"train": {"optimizer": "sgd"}}, "train.optimizer"),
    ({"train": {"schedule": "exp"}}, "train.schedule"),
    ({"train": {"precision": "bf17"}}, "train.precision"),
    ({"trainer": {"strategy": "horovod"}}, "trainer.strategy"),
    ({"model": {"dropout": 1.5}}, "model.dropout"),
    ({"train": {"max_steps": None, "max_epochs": None}}, "max_steps"),
    ({"train": {"warmup_steps": 100, "max_steps": 50}}, "warmup_steps"),
    ({"tokenizer": {"kind": "unigram"}}, "vocab_size"),
    ({"tokenizer": "wordpiece"}, "tokenizer.kind"),
    ({"tokenizer": {"kind": "char", "min_frequency": 3}}, "min_frequency is for kind: word only"),
    ({"tokenizer": {"kind": "word", "min_frequency": 0}}, "min_frequency=0"),
    ({"tokenizer": {"kind": "unigram", "vocab_size": 50, "add_dummy_prefix": False}}, "add_dummy_prefix is for kind: word"),
    ({"tokenizer": {"kind": "word", "vocab_size": 0}}, "vocab_size=0"),
    ({"data": {"task": "no_such_task"}}, "no_such_task"),
    ({"data": {"options": {"colour": 1}}}, "colour"),
    ({"model": {"variant": "enct5"}}, "model.variant=enct5"),  # classifier on a seq2seq task
    ({"data": {"objective": "causal_lm"}}, "data.objective"),  # objective on a seq2seq task
    ({"model": {"variant": "gpt2"}, "data": {"task": "botchan", "objective": "prefix_lm"}}, "prefix_lm"),
    (
        {"model": {"variant": "decoder_only"}, "data": {"task": "botchan", "objective": "prefix_lm"}},
        "model.options.prefix_lm=true",
    ),
    ({"model": {"variant": "pseudo_dec", "options": {"causal_LM": True}}}, "model.options.causal_LM"),
    ({"model": {"variant": "t5"}, "data": {"task": "botchan", "objective": "causal_lm"}}, "data.objective"),
    (
        {"model": {"variant": "decoder_only", "options": {"prefix_lm": True}}, "data": {"loss_on": "all"}},
        "data.loss_on",
    ),
    ({"model": {"variant": "t5", "options": {"not_a_field": 1}}}, "model.options.not_a_field"),
    ({"log": {"csv": False}}, "log.csv"),
    ({"name": "a/b"}, "name"),
]


@pytest.mark.parametrize("raw,needle", BAD, ids=[n for _, n in BAD])
def test_bad_configs_give_one_line_errors(raw, needle):
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    msg = str(info.value)
    assert needle in msg
    assert "\n" not in msg


def test_unknown_override_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match="keys of train: batch_size") as info:
        load_config(None, ["train.batchsize=3"])
    assert "\n" not in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        read_yaml(bad)
    assert "\n" not in str(info.value)


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError for frozen instances
        cfg.train.lr = 1.0


def test_cross_section_error_names_its_key_once():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.variant=enct5", "data.task=copy"])
    message = str(err.value)
    assert message.startswith("config key model.variant=enct5:") and "(top level)" not in message


def test_packing_keys_default_sweep_and_round_trip(tmp_path):
    cfg = load_config()
    assert cfg.data.packing == "auto" and cfg.data.pack_length is None
    packed = load_config(None, ["data.packing=true", "data.pack_length=64"])
    path = tmp_path / "c.yaml"
    path.write_text(packed.to_yaml())
    assert load_config(path) == packed
    # decoder-only examples are input + target long: pack_length must cover 2 * max_length
    with pytest.raises(ConfigError, match=r"data.pack_length=64: causal_lm examples can be 128 tokens"):
        load_config(None, ["model.variant=gpt2", "data.pack_length=64"])
    points = load_sweep({"data": {"packing": [True, False]}})
    assert [c.data.packing for c, _ in points] == [True, False]


def test_override_walk_for_schemas_that_check_their_own_keys():
    """The RL configs reuse this walk: keys unchecked here (their model refuses them by name),
    a scalar where a section is needed refused; train's walk keeps the ``tokenizer: byte`` shorthand."""
    raw = {"policy": {"init": "m"}, "steps": 3}
    out = apply_overrides(raw, ["reward.fn=accuracy", "ppo.lr=1e-3"], check_key=None, sections_only=True)
    assert out == {"policy": {"init": "m"}, "steps": 3, "reward": {"fn": "accuracy"}, "ppo": {"lr": 1e-3}}
    assert raw == {"policy": {"init": "m"}, "steps": 3}  # a new dict
    with pytest.raises(ConfigError, match="steps is not a section"):
        apply_overrides(raw, ["steps.x=1"], check_key=None, sections_only=True)
    assert apply_overrides({"tokenizer": "byte"}, ["tokenizer.vocab_size=300"])["tokenizer"] == {
        "kind": "byte", "vocab_size": 300,
    }
    with pytest.raises(ConfigError, match="unknown config key 'policy.init'"):
        apply_overrides({}, ["policy.init=m"])


def test_fix_floats_and_one_line_messages():
    assert fix_floats({"a": ["1e-3", "x1e3", 2], "b": "-2E5"}) == {"a": [1e-3, "x1e3", 2], "b": -2e5}

    class S(Section):
        need: int
        n: int = 1

    def first(raw):
        with pytest.raises(ValidationError) as info:
            S.model_validate(raw)
        return info.value

    assert one_line(first({})) == "config key need is missing; add it to the YAML or pass need=..."
    assert one_line(first({"need": 1, "m": 2}), keys_hint="see docs") == "unknown config key 'm'; see docs"
    assert one_line(first({"need": "x"})).startswith("config key need: ")


def test_rl_configs_use_this_module_s_sections_and_loader():
    from t5lab.rl.launch import PairsSection, load_rl_config
    from t5lab.rl.run import PolicySection, PPORunConfig, load_ppo_config

    assert all(issubclass(c, Section) for c in (PPORunConfig, PolicySection, PairsSection))
    base = {"policy": {"init": "m"}, "prompts": {"task": "copy"}, "reward": {"fn": "accuracy"}}
    assert load_ppo_config(base, ["eval.temperature=5e-1"]).eval.temperature == 0.5
    with pytest.raises(ConfigError) as info:
        load_rl_config({**base, "algo": "grpo"}, ["grpo.lr=0.1"])
    assert str(info.value).startswith("config key grpo: unknown key grpo.lr; keys of grpo: ")
    with pytest.raises(ConfigError, match="^config key ppo.top_p must be in"):
        load_ppo_config(base, ["ppo.top_p=2"])
