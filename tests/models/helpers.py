"""Helpers shared by the model tests: the variant list the battery runs over, cache access that
works on every supported transformers version, deprecation-warning guards."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any


def output_cache(output: Any) -> Any:
    """The KV cache of a model output: field ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    names = {f.name for f in dataclasses.fields(output)}
    return getattr(output, "cache" if "cache" in names else "past_key_values")


@contextlib.contextmanager
def no_deprecation_warnings() -> Iterator[None]:
    """Fail on FutureWarning/DeprecationWarning raised inside the block (e.g. a renamed kwarg)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        yield


def enable_checkpointing(model: Any) -> None:
    """Activation checkpointing on: ``activation_checkpointing_enable`` (transformers >= 5.24, where
    ``gradient_checkpointing_enable`` warns) or the older name."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
