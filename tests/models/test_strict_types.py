"""@strict field type checks run on t5lab's configs (string annotations resolved by typed_fields)."""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers import T5Config

from t5lab.errors import ConfigError
from t5lab.models.strict_types import typed_fields
from t5lab.variants import get_variant, list_variants

WRONG = {bool: "abc", int: "abc", float: "abc", str: 3}


def _own_fields(cls):
    """Fields a t5lab config class adds to T5Config (the ones postponed annotations left unchecked)."""
    base = {f.name for f in dataclasses.fields(T5Config)}
    return [f for f in dataclasses.fields(cls) if f.name not in base]


def _core_config_classes():
    out = []
    for name in list_variants():
        cls = get_variant(name).config_class
        cls = cls() if cls is not None else None
        if cls is not None and cls.__module__.startswith("t5lab.") and _own_fields(cls):
            out.append(pytest.param(name, cls, id=name))
    return out


@pytest.mark.parametrize("name,cls", _core_config_classes())
def test_every_own_field_of_a_registered_config_rejects_a_wrong_type(name, cls):
    checked = 0
    for f in _own_fields(cls):
        assert not isinstance(f.type, str), f"{cls.__name__}.{f.name} annotation left as a string"
        simple = [t for t in WRONG if f.type is t or t in getattr(f.type, "__args__", ())]
        if not simple:
            continue
        bad = next(v for t, v in WRONG.items() if t in simple and not any(isinstance(v, s) for s in simple))
        with pytest.raises(StrictDataclassFieldValidationError, match=f.name):
            cls(**{f.name: bad})
        checked += 1
    assert checked  # every such class has typed fields (prefix_lm, position_encoding ...)


def test_harness_refuses_a_wrong_option_type_in_one_line():
    variant = get_variant("decoder_only")
    with pytest.raises(ConfigError) as err:
        variant.check_options({"prefix_lm": "abc"})
    assert str(err.value).startswith("config key model.options.prefix_lm=\"abc\": ") and "\n" not in str(err.value)
    variant.check_options({"prefix_lm": True, "position_encoding": "rotary"})  # right types pass


def test_typed_fields_without_it_the_check_is_skipped(monkeypatch):
    """The control: the same class without typed_fields accepts anything (why the decorator exists)."""
    module = types.ModuleType("t5lab_test_postponed")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(  # a module with postponed annotations, as t5lab's model modules are
        "from __future__ import annotations\n"
        "from huggingface_hub.dataclasses import strict\n"
        "from transformers import T5Config\n"
        "@strict\nclass Loose(T5Config):\n    flag: bool = False\n",
        module.__dict__,
    )
    loose = module.Loose
    assert loose(flag="abc").flag == "abc"  # unchecked: the annotation is the string "bool"
    typed = typed_fields(loose)
    with pytest.raises(StrictDataclassFieldValidationError, match="flag"):
        typed(flag="abc")
