"""Tiny experiment configs for the harness tests (seconds each on one CPU thread)."""

from __future__ import annotations

import copy
import os

import pytest
import torch

# one intra-op thread: tiny models gain nothing from more, and a shared CI box pays for spin-waits
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY = {
    "name": "tiny",
    "model": {"variant": "t5", "d_model": 16, "d_ff": 32, "d_kv": 4, "num_heads": 2, "num_layers": 1,
              "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16},
    "data": {"task": "copy", "options": {"min_len": 2, "max_len": 4, "alphabet": "abcd"}, "train": 48, "val": 8,
             "test": 8, "max_length": 8, "seed": 0},
    "tokenizer": "char",
    # precision 32: the tests recompute losses in fp32 (`auto` is bf16-mixed on an AVX512/AMX CPU)
    "train": {"batch_size": 8, "max_steps": 6, "lr": 1e-3, "log_every_n_steps": 2, "num_samples": 1,
              "progress_bar": False, "precision": "32"},
    "trainer": {"accelerator": "cpu", "devices": 1, "num_threads": 1},
}


def tiny(**sections) -> dict:
    """TINY with sections updated: tiny(train={"max_steps": 3}, model={"variant": "gpt2"})."""
    cfg = copy.deepcopy(TINY)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def tiny_cfg():
    return tiny
