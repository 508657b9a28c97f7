"""t5lab.compat: the names that differ between supported transformers releases."""

from __future__ import annotations

import warnings

import torch
import transformers
from packaging.version import Version

from t5lab import compat


def test_cache_name_follows_the_installed_release():
    # the rename came with 5.24 (found from the output classes, checked here by version number)
    expected = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
    assert compat.CACHE_NAME == expected


def test_cache_passed_and_read_under_the_installed_name_equals_a_full_forward(tiny_t5):
    ids = torch.tensor([[5, 6, 7, 8, 1]])
    dec = torch.tensor([[0, 9, 10, 11]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation from the names t5lab uses
        full = tiny_t5(input_ids=ids, decoder_input_ids=dec, use_cache=False).logits[:, -1]
        first = tiny_t5(input_ids=ids, decoder_input_ids=dec[:, :3], use_cache=True)
        cache = compat.output_cache(first)
        assert cache is not None and cache.get_seq_length() == 3
        step = tiny_t5(input_ids=ids, decoder_input_ids=dec[:, 3:], use_cache=True, **compat.cache_kwargs(cache))
    torch.testing.assert_close(step.logits[:, -1], full)


def test_passed_cache_reads_either_name():
    marker = object()
    assert compat.passed_cache({"cache": marker}) is marker
    assert compat.passed_cache({"past_key_values": marker}) is marker
    assert compat.passed_cache({"past_key_values": None, compat.CACHE_NAME: marker}) is marker
    assert compat.passed_cache({}) is None


def _checkpointing(model) -> bool:
    # the flag was renamed with the method (5.24); the old property warns there
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(model, name))


def test_enable_activation_checkpointing_without_deprecation(tiny_t5):
    assert not _checkpointing(tiny_t5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compat.enable_activation_checkpointing(tiny_t5)
    assert _checkpointing(tiny_t5)


def test_pytest_turns_t5lab_and_cache_rename_deprecations_into_errors():
    """pyproject.toml's filterwarnings (and tests/conftest.py's logger bridge), closed form."""
    import logging

    import pytest

    for category in (FutureWarning, DeprecationWarning):
        with pytest.raises(category):
            warnings.warn_explicit("old", category, "x.py", 1, module="t5lab.models.x")
    with pytest.raises(FutureWarning):  # attributed to transformers' wrapper, caught by message
        warnings.warn_explicit("`past_key_values` is deprecated and will be removed in version 5.40.0 for `T5Stack.forward`.",
                               FutureWarning, "generic.py", 1, module="transformers.utils.generic")
    logger = logging.getLogger("transformers.utils.generic")
    level = logging.getLogger("transformers").level
    try:
        logging.getLogger("transformers").setLevel(logging.ERROR)  # as t5lab's loaders leave it
        for _ in range(2):  # transformers logs a read of the old output field, once per process
            with pytest.raises(FutureWarning):
                logger.warning_once("`past_key_values`/`cache_params` are deprecated. Use `cache` instead.")
    finally:
        logging.getLogger("transformers").setLevel(level)
    with warnings.catch_warnings(record=True) as seen:  # someone else's deprecation stays a warning
        warnings.warn_explicit("old", FutureWarning, "y.py", 1, module="somelib.y")
    assert [str(w.message) for w in seen] == ["old"]
