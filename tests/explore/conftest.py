"""Fixtures for the explorer tests: tiny random models of every variant and a byte tokenizer.

The tokenizer is transformers' ByT5 byte tokenizer (pad=0, eos=1, unk=2, appends ``</s>``), so the
tests depend on nothing but transformers; the models have d_model <= 32.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from transformers import ByT5Tokenizer, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

VOCAB = 259  # 3 specials + 256 bytes, no sentinels
T5_KW = dict(
    vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
    relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
)


def byte_tokenizer() -> ByT5Tokenizer:
    return ByT5Tokenizer(extra_ids=0)


def tiny_t5() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(**T5_KW)).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=1, eos_token_id=1, pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def _variant(module: str, config_name: str, model_name: str, **extra):
    """A t5lab variant model, or skip while its file is still work in progress."""
    try:
        mod = importlib.import_module(f"t5lab.models.{module}")
        config_cls, model_cls = getattr(mod, config_name), getattr(mod, model_name)
    except (ImportError, AttributeError):
        pytest.skip(f"t5lab.models.{module}.{model_name} is not there yet")
    torch.manual_seed(0)
    return model_cls(config_cls(**T5_KW, **extra)).eval()


def tiny_pseudo_dec():
    return _variant("pseudo_decoder", "T5PseudoDecConfig", "T5PseudoDecForConditionalGeneration")


def tiny_decoder_only():
    return _variant("decoder_only", "T5DecoderOnlyConfig", "T5DecoderOnlyForCausalLM")


def tiny_prefix_lm():
    return _variant("decoder_only", "T5DecoderOnlyConfig", "T5DecoderOnlyForCausalLM", prefix_lm=True)


LM_FACTORIES = {
    "t5": tiny_t5,
    "pseudo_dec": tiny_pseudo_dec,
    "decoder_only": tiny_decoder_only,
    "prefix_lm": tiny_prefix_lm,
    "gpt2": tiny_gpt2,
}


@pytest.fixture
def tokenizer() -> ByT5Tokenizer:
    return byte_tokenizer()


@pytest.fixture(params=list(LM_FACTORIES))
def lm(request):
    """(variant name, tiny LM) for every LM variant."""
    return request.param, LM_FACTORIES[request.param]()


@pytest.fixture
def t5_model():
    return tiny_t5()


@pytest.fixture
def gpt2_model():
    return tiny_gpt2()
