"""Every public name resolves, and `import t5lab` registers every variant with the Auto classes."""

import pytest
from transformers import AutoConfig

import t5lab


@pytest.mark.parametrize("name", t5lab.__all__)
def test_public_names_resolve(name):
    assert getattr(t5lab, name) is not None


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        t5lab.nope  # noqa: B018


@pytest.mark.parametrize(
    "model_type",
    ["t5_pseudo_dec", "t5_decoder_only", "enct5", "t5_with_value_head",
     "t5_pseudo_dec_with_value_head", "t5_decoder_only_with_value_head"],
)
def test_model_types_registered_with_auto_config(model_type):
    config = AutoConfig.for_model(model_type)
    assert config.model_type == model_type
