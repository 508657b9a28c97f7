"""t5lab.variants: one Variant per variant, found by name, by a loaded model or by a directory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from t5lab.errors import ConfigError, T5LabError
from t5lab.variants import (
    BuildInfo,
    Variant,
    get_variant,
    list_variants,
    register_model,
    unregister,
    variant_for_model_type,
    variant_of,
)

BUILT_IN = ["t5", "pseudo_dec", "decoder_only", "enct5", "gpt2"]


def test_built_ins_are_registered_with_their_model_types():
    assert list_variants()[:5] == BUILT_IN
    owners = {
        "t5": "t5", "t5_with_value_head": "t5", "t5_pseudo_dec": "pseudo_dec",
        "t5_pseudo_dec_with_value_head": "pseudo_dec", "t5_decoder_only": "decoder_only",
        "t5_decoder_only_with_value_head": "decoder_only", "enct5": "enct5", "gpt2": "gpt2",
    }
    for model_type, name in owners.items():
        assert variant_for_model_type(model_type) is get_variant(name)


def test_the_model_types_are_the_classes_own():
    """A variant's model_types are what its config classes save (checked against the classes)."""
    for name in BUILT_IN:
        v = get_variant(name)
        assert v.config_class().model_type in v.model_types
        if v.value_head is not None:
            assert v.value_head().config_class.model_type in v.model_types


def test_formulation_kinds():
    assert [get_variant(n).kind_of({}) for n in BUILT_IN] == ["seq2seq", "seq2seq", "causal_lm", "classification", "causal_lm"]
    dec = get_variant("decoder_only")
    assert dec.kind_of({"prefix_lm": True}) == "prefix_lm" and dec.kinds == ("causal_lm", "prefix_lm")
    assert get_variant("gpt2").kind_of({"prefix_lm": True}) == "causal_lm"  # no prefix option
    assert not get_variant("enct5").generates and get_variant("t5").generates


def test_new_tokens_slices_the_continuation():
    out = torch.arange(12).reshape(2, 6)
    assert get_variant("t5").new_tokens(out, 4).tolist() == out[:, 1:].tolist()  # after the decoder start
    assert get_variant("gpt2").new_tokens(out, 4).tolist() == out[:, 4:].tolist()  # after the prompt


def test_variant_of_a_loaded_model_and_a_model_dir(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    from t5lab.models.decoder_only import T5DecoderOnlyConfig, T5DecoderOnlyForCausalLM

    small = dict(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0)
    t5 = T5ForConditionalGeneration(T5Config(**small))
    dec = T5DecoderOnlyForCausalLM(T5DecoderOnlyConfig(**small, prefix_lm=True))
    assert variant_of(t5) is get_variant("t5")
    assert variant_of(dec) is get_variant("decoder_only") and variant_of(dec).is_prefix_lm(dec)
    dec.save_pretrained(tmp_path / "dec")
    assert variant_of(tmp_path / "dec") is get_variant("decoder_only")
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {variant: pseudo_dec}\n")
    assert variant_of(run) is get_variant("pseudo_dec")  # a run dir answers from its config.yaml


def test_variant_of_a_dir_imports_no_torch(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5_decoder_only"}))
    code = (
        "import sys; from t5lab.variants import variant_of; "
        f"print(variant_of({str(tmp_path)!r}).name, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["decoder_only", "False", "False"]


def test_unknown_model_type_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(T5LabError, match="'bert' belongs to no t5lab variant") as err:
        variant_of(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown model variant 'nope'"):
        get_variant("nope")


@pytest.mark.parametrize("model_type,ok", [("t5", True), ("t5_pseudo_dec", True), ("enct5", True), ("gpt2", False), ("bert", False)])
def test_init_from_must_hold_a_checkpoint_of_the_family(tmp_path, model_type, ok):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    if ok:
        get_variant("decoder_only").check_checkpoint(tmp_path)
        return
    with pytest.raises(ConfigError, match=rf"holds a '{model_type}' model; variant 'decoder_only' starts from a t5") as err:
        get_variant("decoder_only").check_checkpoint(tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", BUILT_IN)
def test_init_from_gives_a_model_in_train_mode_as_a_fresh_one(tmp_path, name):
    """from_pretrained returns eval mode; a run from init_from must train with dropout on, as fresh."""
    from t5lab.config import ModelConfig

    sizes = dict(d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=1, dropout=0.1)
    info = BuildInfo(vocab_size=40, max_length=32)
    variant = get_variant(name)
    fresh = variant.build(ModelConfig(variant=name, **sizes), info)
    assert fresh.training
    fresh.save_pretrained(tmp_path)
    loaded = variant.build(ModelConfig(variant=name, init_from=str(tmp_path), **sizes), info)
    assert [m.training for m in loaded.modules()] == [True] * len(list(loaded.modules()))


@pytest.mark.parametrize("name", ["pseudo_dec", "decoder_only", "enct5"])
def test_learned_position_tables_cover_the_run(name):
    """data.max_length above the 512-row default: the table grows to the run's longest sequence
    (BuildInfo.for_run: input + target); runs that fit 512 keep it; an explicit option wins."""
    from t5lab.config import ModelConfig

    sizes = dict(d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=1, options={"position_encoding": "absolute"})
    variant = get_variant(name)
    long = variant.build(ModelConfig(variant=name, **sizes), BuildInfo(vocab_size=40, max_length=2 * 600 + 8))
    assert long.config.max_position_embeddings == 1208
    ids = torch.randint(2, 40, (1, 600))
    with torch.no_grad():
        if name == "pseudo_dec":
            long(input_ids=ids, decoder_input_ids=ids)  # 600 tokens on each side
        elif name == "decoder_only":
            long(input_ids=torch.cat([ids, ids], 1))  # input + target
        else:
            long(input_ids=ids)
    short = variant.build(ModelConfig(variant=name, **sizes), BuildInfo(vocab_size=40, max_length=2 * 64 + 8))
    assert short.config.max_position_embeddings == 512
    sizes["options"]["max_position_embeddings"] = 100
    mine = variant.build(ModelConfig(variant=name, **sizes), BuildInfo(vocab_size=40, max_length=1208))
    assert mine.config.max_position_embeddings == 100


def test_refused_and_unknown_options():
    with pytest.raises(ConfigError, match=r"model.options.causal_LM=true: the harness trains pseudo_dec"):
        get_variant("pseudo_dec").check_options({"causal_LM": True})
    get_variant("pseudo_dec").check_options({"causal_LM": False})
    with pytest.raises(ConfigError, match="model.options.nope: not an option of variant 't5'"):
        get_variant("t5").check_options({"nope": 1})


def test_register_model_makes_a_variant_that_owns_its_config_model_type():
    from transformers import T5Config, T5ForConditionalGeneration

    class MyConfig(T5Config):
        model_type = "test_my_t5"

    @register_model("test_my_t5", "seq2seq", config_class=MyConfig)
    def build(cfg, info: BuildInfo):
        return T5ForConditionalGeneration(MyConfig(vocab_size=info.vocab_size))

    try:
        v = get_variant("test_my_t5")
        assert isinstance(v, Variant) and v.model_types == ("test_my_t5",)
        assert variant_for_model_type("test_my_t5") is v
        register_model("test_my_t5", "seq2seq", builder=build, config_class=MyConfig)  # the same again: harmless
        with pytest.raises(ValueError, match="already registered"):
            register_model("test_my_t5", "seq2seq", builder=lambda cfg, info: None)
        with pytest.raises(ValueError, match="already belongs to variant 't5'"):
            register_model("test_other", "seq2seq", builder=lambda cfg, info: None, model_types=("t5",))
    finally:
        unregister("test_my_t5")
    assert "test_my_t5" not in list_variants()


@pytest.mark.parametrize("model_type,name", [("enct5", "enct5"), ("gpt2", "gpt2")])
def test_ppo_and_rl_ask_the_variant_for_a_policy(tmp_path, model_type, name):
    """load_policy needs a value-head model, load_lm a generator: one line naming the variants that have one."""
    from t5lab.rl.launch import load_lm
    from t5lab.rl.run import load_policy

    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(T5LabError, match=rf"holds a model of variant {name}, which has no value-head model; PPO needs one of: t5, pseudo_dec, decoder_only") as err:
        load_policy(tmp_path)
    assert "\n" not in str(err.value)
    if name == "enct5":
        with pytest.raises(T5LabError, match=r"holds a model of variant enct5, which generates no text; RL needs a generator: t5, pseudo_dec, decoder_only, gpt2"):
            load_lm(tmp_path)
