"""Tiny value-head policies (t5lab's value-head models) for the PPO tests, seeded, one thread."""

from __future__ import annotations

import pytest
import torch
from transformers import T5Config

from tests.conftest import TINY_T5


@pytest.fixture(autouse=True)
def _one_thread():
    # The CI box has 2 cores shared by many processes; with several intra-op threads each tiny
    # matmul waits on oversubscribed cores (20-50x slower here). Tiny models need one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_value_model(variant: str = "t5", **over):
    """A fresh tiny value-head policy of a variant: ``t5``, ``pseudo_dec``, ``decoder_only``, ``prefix_lm``."""
    from t5lab.models.value_head import (
        T5DecoderOnlyWithValueHead,
        T5DecoderOnlyWithValueHeadConfig,
        T5HeadWithValueModel,
        T5PseudoDecWithValueHead,
        T5PseudoDecWithValueHeadConfig,
    )

    torch.manual_seed(0)
    cfg = {**TINY_T5, **over}
    if variant == "t5":
        return T5HeadWithValueModel(T5Config(**cfg)).eval()
    if variant == "pseudo_dec":
        return T5PseudoDecWithValueHead(T5PseudoDecWithValueHeadConfig(**cfg)).eval()
    cfg.pop("num_decoder_layers")
    config = T5DecoderOnlyWithValueHeadConfig(**cfg, prefix_lm=variant == "prefix_lm")
    return T5DecoderOnlyWithValueHead(config).eval()


@pytest.fixture
def value_t5():
    return tiny_value_model("t5")
