"""Extending t5lab from one file: a new model variant and a new task, trained with `t5lab train`.

    t5lab --import examples/scaled_attention.py train model.variant=scaled_t5 data.task=swap_halves

* ``scaled_t5``: a T5 whose attention logits are multiplied by a constant ``attention_scale``.
  T5 folds the usual 1/sqrt(d_kv) into its initialisation (Raffel et al. 2020, Mesh TensorFlow), so
  the scores are ``q k^T + position_bias``; scaling the query projection's output by ``s`` scales
  the content part of every score by ``s`` (the relative-position bias is left as is). A forward
  hook on each ``q`` does it, so the weights keep T5's names and a T5 checkpoint loads unchanged.
* ``swap_halves``: a seq2seq task, ``abcdef -> defabc``.

The config and model register with the transformers Auto classes, so the saved ``model/`` of a run
loads with ``AutoModelForSeq2SeqLM.from_pretrained`` once this module is imported. Registering the
variant (``register_model``) is all the commands need: ``sample``, ``eval``, ``attn``, ``trace``,
``plot``, ``compare`` and ``bench --variants scaled_t5`` find it from the saved ``model_type``, and
``ppo`` trains its value-head model (``value_head=``)::

    t5lab --import examples/scaled_attention.py sample runs/scaled-attention_scale=0.5 "abcd"
"""

from __future__ import annotations

import random

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

from t5lab.models.registry import register_model, t5_config_kwargs
from t5lab.models.value_head import ValueHeadConfigMixin, ValueHeadMixin
from t5lab.tasks import Pair, Task, register_task


@strict
class ScaledT5Config(T5Config):
    """``T5Config`` plus ``attention_scale`` (multiplies the content part of every attention logit)."""

    model_type = "scaled_t5"
    attention_scale: float = 1.0

    def __post_init__(self, **kwargs):
        kwargs.pop("model_type", None)  # the class decides its model type, not a T5 dict
        super().__post_init__(**kwargs)


class ScaledT5ForConditionalGeneration(T5ForConditionalGeneration):
    config_class = ScaledT5Config

    def __init__(self, config: ScaledT5Config):
        super().__init__(config)
        scale = float(config.attention_scale)
        for name, module in self.named_modules():
            if name.endswith(("SelfAttention.q", "EncDecAttention.q")):
                # (B, T, H*D) queries * s  ->  scores q k^T * s
                module.register_forward_hook(lambda _m, _inp, out: out * scale)


@strict
class ScaledT5WithValueHeadConfig(ValueHeadConfigMixin, ScaledT5Config):
    """The PPO policy's config: ``ScaledT5Config`` plus the value-head fields."""

    model_type = "scaled_t5_with_value_head"


class ScaledT5WithValueHead(ValueHeadMixin, ScaledT5ForConditionalGeneration):
    """The scaled T5 with a value head on its last decoder hidden state (``t5lab ppo``'s policy)."""

    config_class = ScaledT5WithValueHeadConfig


AutoConfig.register(ScaledT5Config.model_type, ScaledT5Config, exist_ok=True)
AutoModelForSeq2SeqLM.register(ScaledT5Config, ScaledT5ForConditionalGeneration, exist_ok=True)
AutoConfig.register(ScaledT5WithValueHeadConfig.model_type, ScaledT5WithValueHeadConfig, exist_ok=True)
AutoModelForSeq2SeqLM.register(ScaledT5WithValueHeadConfig, ScaledT5WithValueHead, exist_ok=True)


# model_types ("scaled_t5", "scaled_t5_with_value_head") come from the two config classes
@register_model(
    "scaled_t5",
    objective="seq2seq",
    model_class=ScaledT5ForConditionalGeneration,
    config_class=ScaledT5Config,
    value_head=ScaledT5WithValueHead,
)
def build_scaled_t5(cfg, info):
    """``model:`` config section + tokenizer facts -> a fresh model (``model.options.attention_scale``)."""
    return ScaledT5ForConditionalGeneration(ScaledT5Config(**t5_config_kwargs(cfg, info)))


@register_task("swap_halves")
class SwapHalves(Task):
    """``abcdef -> defabc``: swap the two halves of an even-length string."""

    kind = "seq2seq"

    def __init__(self, min_half: int = 2, max_half: int = 4, alphabet: str = "abcdefgh"):
        self.min_half, self.max_half, self.alphabet_ = min_half, max_half, alphabet

    def generate(self, n: int, seed: int) -> list[Pair]:
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            half = rng.randint(self.min_half, self.max_half)
            x = "".join(rng.choice(self.alphabet_) for _ in range(2 * half))
            out.append(Pair(x, x[half:] + x[:half]))
        return out

    def alphabet(self) -> str:
        return self.alphabet_

    def options(self) -> dict:
        return {"min_half": self.min_half, "max_half": self.max_half, "alphabet": self.alphabet_}
