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


# ---------------------------------------------------------------------------------------------
# The battery's cases: every registered variant (and mode), plus its value-head model
# ---------------------------------------------------------------------------------------------

VOCAB = 96
# tiny but complete: 2 layers, 4 heads, a bucket table that distances reach the end of
TINY_MODEL = dict(
    d_model=32,
    d_ff=64,
    d_kv=8,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout=0.0,
)

KIND_AUTO_CLASS = {
    "seq2seq": "AutoModelForSeq2SeqLM",
    "causal": "AutoModelForCausalLM",
    "classifier": "AutoModelForSequenceClassification",
}


@dataclasses.dataclass(frozen=True)
class Case:
    """One model the battery runs over.

    Attributes:
        id: the test id: ``variant``, ``variant[prefix_lm]``, ``+value_head`` for the head model.
        variant: the registered ``model.variant`` name.
        options: ``model.options`` it is built with.
        kind: seq2seq | causal | classifier, from the variant's objective.
        prefix_lm: the model is a prefix LM (batches carry a ``prefix_mask``).
        value_head: the value-head model class to wrap the LM in, or None.
    """

    id: str
    variant: str
    options: tuple[tuple[str, Any], ...]
    kind: str
    prefix_lm: bool = False
    value_head: type | None = None

    def build(self, seed: int = 0) -> Any:
        """A fresh tiny model in eval mode (the value-head model has the LM's config and a head)."""
        import torch

        from t5lab.config import ModelConfig
        from t5lab.models import registry

        torch.manual_seed(seed)
        cfg = ModelConfig(variant=self.variant, **TINY_MODEL, options=dict(self.options))
        info = registry.BuildInfo(vocab_size=VOCAB, pad_token_id=0, eos_token_id=1, max_length=64, num_labels=3)
        model = registry.build_model(cfg, info)
        if self.value_head is not None:
            torch.manual_seed(seed)
            model = self.value_head(model.config)
        return model.eval()

    def auto_class(self) -> Any:
        import transformers

        return getattr(transformers, KIND_AUTO_CLASS[self.kind])


_KIND = {"seq2seq": "seq2seq", "prefix_lm": "causal", "causal_lm": "causal", "classification": "classifier"}


def _value_head_class(spec: Any, lm_class: type) -> type | None:
    """The value-head model of an LM variant: the variant's own (``spec.value_head``) where the
    registry records it, else the ValueHeadMixin subclass built on the LM's class."""
    getter = getattr(spec, "value_head", None)
    if getter is not None:
        return getter()
    from t5lab.models.value_head import ValueHeadMixin, _lm_base

    stack, found = list(ValueHeadMixin.__subclasses__()), None
    while stack:
        sub = stack.pop()
        stack.extend(sub.__subclasses__())
        if _lm_base(sub) is lm_class and found is None:
            found = sub
    return found


def battery_cases() -> list[Case]:
    """Every registered variant, in each mode its options select (prefix LM), plus the value-head
    model of each LM. The only place that reads the registry: change it when the registry moves."""
    import t5lab  # noqa: F401  (registers the built-in variants and the Auto classes)
    from t5lab.models import registry

    cases: list[Case] = []
    for name in registry.list_models():
        spec = registry.get_model_spec(name)
        modes: list[dict[str, Any]] = [{}]
        prefix_option = getattr(spec, "prefix_lm_option", None)
        if prefix_option is None and "prefix_lm" in (registry.option_names(spec) or []):
            prefix_option = "prefix_lm"
        if prefix_option is not None:
            modes.append({prefix_option: True})
        for options in modes:
            kind = _KIND[registry.effective_objective(spec, options)]
            prefix_lm = registry.effective_objective(spec, options) == "prefix_lm"
            case_id = name + ("[prefix_lm]" if prefix_lm else "")
            case = Case(case_id, name, tuple(sorted(options.items())), kind, prefix_lm)
            cases.append(case)
            if kind != "classifier":
                head = _value_head_class(spec, type(case.build()))
                if head is not None:
                    cases.append(dataclasses.replace(case, id=f"{case_id}+value_head", value_head=head))
    return cases


def checkpointing_on(model: Any) -> bool:
    """Whether activation checkpointing is on (``is_activation_checkpointing`` on transformers >= 5.24)."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return model.is_activation_checkpointing
    return model.is_gradient_checkpointing
