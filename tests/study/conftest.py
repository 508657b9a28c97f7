"""Tiny study files for the study tests (seconds per run on one CPU thread)."""

from __future__ import annotations

import copy

from tests.train.conftest import TINY

BASE = {k: copy.deepcopy(v) for k, v in TINY.items() if k != "name"}


def tiny_study(**keys) -> dict:
    """A two-variant study (t5 vs decoder_only) on the harness tests' tiny copy task."""
    study = {
        "name": "tiny",
        "base": copy.deepcopy(BASE),
        "axes": {"variants": {"encdec": {"model.variant": "t5"}, "causal": {"model.variant": "decoder_only"}}},
        "seeds": 1,
    }
    study.update(copy.deepcopy(keys))
    return study
