"""What differs between the transformers releases t5lab supports, decided once at import.

transformers 5.24 renamed the KV cache: forward methods take ``cache=`` and outputs carry a
``cache`` field, where 5.20-5.23 use ``past_key_values`` for both (the old name still works on 5.24
but warns, and goes in 5.40). t5lab code passes and reads the cache only through the names here,
so it never triggers that warning and keeps working on the declared minimum.

The name is found from transformers' public output classes (the field they declare), not from a
version number, so a backport or a later release is followed as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from transformers.modeling_outputs import CausalLMOutputWithPast

OLD_CACHE_NAME = "past_key_values"  # transformers 5.20-5.23 (deprecated from 5.24, removed in 5.40)
NEW_CACHE_NAME = "cache"  # transformers >= 5.24

#: The KV cache's name in the installed transformers: the forward keyword and the output field.
CACHE_NAME: str = (
    NEW_CACHE_NAME if NEW_CACHE_NAME in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else OLD_CACHE_NAME
)


def cache_kwargs(cache: Any) -> dict[str, Any]:
    """``{name: cache}`` to pass a KV cache to a forward: ``model(ids, **cache_kwargs(past))``."""
    return {CACHE_NAME: cache}


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned (None when it returned none), read under the installed name."""
    return getattr(output, CACHE_NAME, None)


def passed_cache(kwargs: Mapping[str, Any]) -> Any:
    """The cache in a forward's keyword arguments, under either name on any release (a forward hook
    sees what the caller passed: ``generate()`` uses the installed name, t5lab's models take both)."""
    cache = kwargs.get(NEW_CACHE_NAME)
    return kwargs.get(OLD_CACHE_NAME) if cache is None else cache


def enable_activation_checkpointing(model: Any) -> None:
    """Turn on activation (gradient) checkpointing: ``activation_checkpointing_enable()`` on
    transformers >= 5.24, ``gradient_checkpointing_enable()`` (now a deprecated alias) before."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
