"""t5lab: a workbench for the T5 family of transformer architectures.

Importing ``t5lab`` registers every model variant with the transformers Auto classes
(``AutoConfig``, ``AutoModelForSeq2SeqLM``, ``AutoModelForCausalLM``,
``AutoModelForSequenceClassification``), so saved t5lab models load without ``trust_remote_code``:
at once when transformers is already imported, else right after transformers is first imported
(:mod:`t5lab._autoregister`). So ``import t5lab.config`` or ``t5lab --help`` load neither torch
nor transformers. Everything else (explorer, pipelines, RL) is imported lazily on first use.
"""

from __future__ import annotations

from t5lab._autoregister import register_when_transformers_loads
from t5lab._lazy import lazy_exports

register_when_transformers_loads()

__version__ = "0.1.0"

# public name -> module that defines it; resolved on first attribute access
_LAZY: dict[str, str] = {
    # models
    "T5PseudoDecConfig": "t5lab.models.pseudo_decoder",
    "T5PseudoEncoder": "t5lab.models.pseudo_decoder",
    "T5PseudoDecForConditionalGeneration": "t5lab.models.pseudo_decoder",
    "T5DecoderOnlyConfig": "t5lab.models.decoder_only",
    "T5DecoderOnlyForCausalLM": "t5lab.models.decoder_only",
    "EncT5Config": "t5lab.models.enct5",
    "EncT5ForSequenceClassification": "t5lab.models.enct5",
    "T5ValueHead": "t5lab.models.value_head",
    "T5WithValueHeadConfig": "t5lab.models.value_head",
    "T5PseudoDecWithValueHeadConfig": "t5lab.models.value_head",
    "T5DecoderOnlyWithValueHeadConfig": "t5lab.models.value_head",
    "T5HeadWithValueModel": "t5lab.models.value_head",
    "T5PseudoDecWithValueHead": "t5lab.models.value_head",
    "T5DecoderOnlyWithValueHead": "t5lab.models.value_head",
    "register_model": "t5lab.variants",
    "Variant": "t5lab.variants",
    "variant_of": "t5lab.variants",
    "resolve": "t5lab.plan",
    "Plan": "t5lab.plan",
    # harness
    "load_config": "t5lab.config",
    "register_task": "t5lab.tasks",
    "get_task": "t5lab.tasks",
    "build_splits": "t5lab.tasks",
    "build_tokenizer": "t5lab.tokenizers",
    "load_tokenizer": "t5lab.tokenizers",
    # explorer
    "load_run": "t5lab.explore",
    "plot_metrics": "t5lab.explore",
    "sample": "t5lab.explore",
    "perplexity": "t5lab.explore",
    "attention_maps": "t5lab.explore",
    "hidden_states": "t5lab.explore",
    "ablate_heads": "t5lab.explore",
    "prune_heads": "t5lab.explore",
    "trace": "t5lab.explore",
    "compare": "t5lab.explore",
    "pipeline": "t5lab.pipelines",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports("t5lab", _LAZY, globals())
