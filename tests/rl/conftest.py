"""Tiny value-head policies for the PPO tests (seq2seq T5 and decoder-only T5, seeded)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from tests.conftest import TINY_T5


class TinyT5WithValue(T5ForConditionalGeneration):
    """transformers' T5 plus a linear value head on the last decoder hidden state (test stand-in)."""

    def __init__(self, config: T5Config) -> None:
        super().__init__(config)
        self.v_head = nn.Linear(config.d_model, 1)
        self.detached = False

    def detach_head(self) -> None:
        self.detached = True

    def attach_head(self) -> None:
        self.detached = False

    def forward(self, *args, **kwargs):
        kwargs["output_hidden_states"] = True
        out = super().forward(*args, **kwargs)
        hidden = out.decoder_hidden_states[-1]  # (B, T, D)
        if self.detached:
            hidden = hidden.detach()
        out["values"] = self.v_head(hidden).squeeze(-1).float()  # (B, T)
        return out


@pytest.fixture
def value_t5() -> TinyT5WithValue:
    torch.manual_seed(0)
    return TinyT5WithValue(T5Config(**TINY_T5)).eval()
