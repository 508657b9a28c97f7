"""Shared fixtures: tiny random T5 models saved to temporary directories (never a hub)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import logging  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import T5Config, T5ForConditionalGeneration  # noqa: E402

TINY_T5 = dict(
    vocab_size=64,
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_decoder_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.0,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
)


# Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine two threads per
# process oversubscribe the CPU (measured ~30x slower per op); subprocess tests set their own.
torch.set_num_threads(1)


_OLD_CACHE_NOTICE = "`past_key_values`/`cache_params` are deprecated"
_warning_once = getattr(logging.Logger, "warning_once", None)  # transformers adds it (lru-cached)


def _warning_once_as_warning(self, *args, **kwargs):
    """transformers >= 5.24 reports a read of the old cache name (``out.past_key_values``,
    ``Output(past_key_values=...)``) with ``logger.warning_once``: once per process, and not at
    all under ``set_verbosity_error()`` (which t5lab's loaders call). Here it also becomes a
    FutureWarning, every time, so that pyproject.toml's ``filterwarnings`` makes it an error like
    the deprecated keyword (t5lab reads the cache through ``t5lab.compat``)."""
    if args and isinstance(args[0], str) and args[0].startswith(_OLD_CACHE_NOTICE):
        warnings.warn(args[0], FutureWarning, stacklevel=2)
    return _warning_once(self, *args, **kwargs)


if _warning_once is not None:
    logging.Logger.warning_once = _warning_once_as_warning


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_t5_config() -> T5Config:
    return T5Config(**TINY_T5)


@pytest.fixture
def tiny_t5(tiny_t5_config) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(tiny_t5_config).eval()


@pytest.fixture
def t5_checkpoint(tmp_path, tiny_t5) -> str:
    """A plain HF T5 checkpoint directory, as `T5ForConditionalGeneration.save_pretrained` writes it."""
    path = tmp_path / "t5_checkpoint"
    tiny_t5.save_pretrained(path)
    return str(path)
