"""Make ``@strict`` type checks run on configs defined in modules with postponed annotations.

huggingface_hub's ``@strict`` validates a field against ``Field.type``, and skips a type given as a
string. Under ``from __future__ import annotations`` every annotation is a string, so t5lab's
config fields (``prefix_lm: bool``, ``position_encoding: str`` ...) were never checked:
``prefix_lm="abc"`` built a model. :func:`typed_fields` swaps each string for the type it names;
the validators ``@strict`` made read ``Field.type`` when they run, so they check from then on.
"""

from __future__ import annotations

import dataclasses
import sys

__all__ = ["typed_fields"]

# fields declared by transformers' own config classes keep transformers' behaviour
_LEFT_AS_IS = frozenset({"transformers", "huggingface_hub"})


def typed_fields(cls: type) -> type:
    """Class decorator (outside ``@strict``): evaluate the string annotations of the fields that
    ``cls`` and its non-transformers bases declare."""
    for f in dataclasses.fields(cls):
        if not isinstance(f.type, str):
            continue
        owner = next((c for c in cls.__mro__ if f.name in vars(c).get("__annotations__", {})), None)
        if owner is None or owner.__module__.split(".")[0] in _LEFT_AS_IS:
            continue
        try:  # in the namespace of the module that wrote the annotation
            f.type = eval(f.type, vars(sys.modules[owner.__module__]))  # noqa: S307 - our own source
        except Exception:  # noqa: BLE001 - a name only imported for type checkers: stays unchecked
            continue
    return cls
