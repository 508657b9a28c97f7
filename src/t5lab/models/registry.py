"""Variant registry: a name -> how to build the HF model, and which formulation it trains with.

The harness (``t5lab.train``) looks variants up here by the ``model.variant`` config key, so a
researcher adds a variant in one file of their own::

    from t5lab.models.registry import register_model

    @register_model("scaled_t5", objective="seq2seq", config_class=MyConfig)
    def build(cfg, info):            # cfg: the ``model`` config section, info: BuildInfo
        return MyModel(MyConfig(**t5_config_kwargs(cfg, info)))

and trains it with ``t5lab --import my_module.py train model.variant=scaled_t5``.

This module imports no Lightning/YAML/task code; builders import transformers lazily so that
listing the variant names (config validation, ``t5lab --help``) stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

ModelObjective = Literal["seq2seq", "prefix_lm", "causal_lm", "classification"]
OBJECTIVES: tuple[str, ...] = ("seq2seq", "prefix_lm", "causal_lm", "classification")


@dataclass(frozen=True)
class BuildInfo:
    """What a builder needs to know besides the model config section: tokenizer and task facts."""

    vocab_size: int
    pad_token_id: int = 0
    eos_token_id: int = 1
    max_length: int = 512  # longest sequence the model will see (gpt2: n_positions)
    num_labels: int = 2  # classification variants
    problem_type: str | None = None
    id2label: dict[int, str] | None = None


Builder = Callable[[Any, BuildInfo], Any]


@dataclass(frozen=True)
class VariantSpec:
    """A registered variant.

    Attributes:
        name: The ``model.variant`` name.
        builder: ``builder(model_cfg, info) -> PreTrainedModel`` for a fresh model.
        objective: The formulation it trains with. ``causal_lm`` variants whose config has a true
            ``prefix_lm`` option train as ``prefix_lm`` (see :func:`effective_objective`).
        model_class: Callable that returns the model class (for ``init_from`` loading); lazy so
            that registering does not import transformers.
        config_class: Callable returning the HF config class, whose fields are the allowed
            ``model.options`` keys (None: any option is passed through).
    """

    name: str
    builder: Builder
    objective: str
    model_class: Callable[[], type] | None = None
    config_class: Callable[[], type] | None = None
    option_defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, VariantSpec] = {}


def _lazy(cls_or_fn: Any) -> Callable[[], type] | None:
    if cls_or_fn is None:
        return None
    if isinstance(cls_or_fn, type):
        return lambda: cls_or_fn
    return cls_or_fn


def register_model(
    name: str,
    objective: ModelObjective = "seq2seq",
    *,
    builder: Builder | None = None,
    model_class: type | Callable[[], type] | None = None,
    config_class: type | Callable[[], type] | None = None,
) -> Any:
    """Register a model variant; usable as a decorator on the builder or as a plain call.

    Args:
        name: The ``model.variant`` name.
        objective: seq2seq | prefix_lm | causal_lm | classification: how ``t5lab.formulation`` turns
            task records into batches for this variant.
        builder: ``builder(model_cfg, info: BuildInfo) -> PreTrainedModel``; omit to decorate.
        model_class: The model class, or a zero-argument callable returning it, used to load
            ``model.init_from`` checkpoints (default: the class of a freshly built model).
        config_class: The HF config class (or a callable returning it); its fields are the allowed
            ``model.options`` keys.

    Returns:
        The builder (decorator form) or None.

    Raises:
        ValueError: Unknown objective, or the name is taken by a different builder.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"register_model({name!r}): objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")

    def decorate(fn: Builder) -> Builder:
        old = _REGISTRY.get(name)
        same = old is not None and (
            getattr(old.builder, "__qualname__", None) == getattr(fn, "__qualname__", None)
            and getattr(old.builder, "__module__", None) == getattr(fn, "__module__", None)
        )
        if old is not None and not same:
            raise ValueError(f"model variant {name!r} is already registered; choose another name")
        _REGISTRY[name] = VariantSpec(name, fn, objective, _lazy(model_class), _lazy(config_class))
        return fn

    if builder is not None:
        decorate(builder)
        return None
    return decorate


def list_models() -> list[str]:
    """Names of every registered variant (built-ins first)."""
    return list(_REGISTRY)


def get_model_spec(name: str) -> VariantSpec:
    """The :class:`VariantSpec` of ``name``; a one-line error lists the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model variant {name!r}; known: {', '.join(_REGISTRY)} (register one with @register_model)"
        ) from None


def option_names(spec: VariantSpec) -> list[str] | None:
    """Allowed ``model.options`` keys of a variant (fields of its config class), or None for any."""
    if spec.config_class is None:
        return None
    cls = spec.config_class()
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    import inspect

    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]


def option_value(spec: VariantSpec, options: dict[str, Any], key: str, default: Any = None) -> Any:
    """An option's value: the config's, else the variant config class's default."""
    if key in options:
        return options[key]
    if spec.config_class is not None:
        cls = spec.config_class()
        if dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                if f.name == key and f.default is not dataclasses.MISSING:
                    return f.default
        return getattr(cls, key, default)
    return default


def effective_objective(spec: VariantSpec, options: dict[str, Any]) -> str:
    """The formulation a variant trains with, given its options.

    A ``causal_lm`` variant whose config has ``prefix_lm=True`` (the decoder-only T5 in prefix-LM
    mode, Raffel et al. 2020, section 3.2.1) trains as ``prefix_lm``.
    """
    if spec.objective == "causal_lm" and bool(option_value(spec, options, "prefix_lm", False)):
        return "prefix_lm"
    return spec.objective


# ------------------------------------------------------------------------------------------------
# Config helpers for builders
# ------------------------------------------------------------------------------------------------


def t5_config_kwargs(cfg: Any, info: BuildInfo) -> dict[str, Any]:
    """``T5Config`` keyword arguments from the ``model`` config section and the tokenizer facts."""
    return dict(
        vocab_size=info.vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers if cfg.num_decoder_layers is not None else cfg.num_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.relative_attention_num_buckets,
        relative_attention_max_distance=cfg.relative_attention_max_distance,
        dropout_rate=cfg.dropout,
        layer_norm_epsilon=cfg.layer_norm_epsilon,
        initializer_factor=cfg.initializer_factor,
        feed_forward_proj=cfg.feed_forward_proj,
        pad_token_id=info.pad_token_id,
        eos_token_id=info.eos_token_id,
        decoder_start_token_id=info.pad_token_id,  # T5 starts decoding from pad
        **dict(cfg.options),
    )


def _build_t5(cfg: Any, info: BuildInfo) -> Any:
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(**t5_config_kwargs(cfg, info)))


_GPT2_ACT = {"relu": "relu", "gelu": "gelu_new", "gelu_new": "gelu_new", "silu": "silu"}


def _build_gpt2(cfg: Any, info: BuildInfo) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    act = _GPT2_ACT.get(cfg.feed_forward_proj)
    if act is None:
        raise ValueError(
            f"model.feed_forward_proj={cfg.feed_forward_proj!r} is not available for gpt2; use one of {', '.join(_GPT2_ACT)}"
        )
    config = GPT2Config(
        vocab_size=info.vocab_size,
        n_positions=info.max_length,
        n_embd=cfg.d_model,
        n_inner=cfg.d_ff,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        activation_function=act,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        layer_norm_epsilon=cfg.layer_norm_epsilon,
        bos_token_id=info.eos_token_id,
        eos_token_id=info.eos_token_id,
        pad_token_id=info.pad_token_id,
        **dict(cfg.options),
    )
    return GPT2LMHeadModel(config)


def _variant_class(module: str, name: str) -> Callable[[], type]:
    def get() -> type:
        import importlib

        mod = importlib.import_module(f"t5lab.models.{module}")
        try:
            return getattr(mod, name)
        except AttributeError:
            raise ValueError(f"model variant class {name} is not available yet in t5lab.models.{module}") from None

    return get


def _build_from(module: str, config_name: str, model_name: str, classification: bool = False) -> Builder:
    def build(cfg: Any, info: BuildInfo) -> Any:
        config_cls = _variant_class(module, config_name)()
        model_cls = _variant_class(module, model_name)()
        kwargs = t5_config_kwargs(cfg, info)
        if module == "pseudo_decoder":
            # the harness feeds seq2seq batches; without this the pseudo decoder auto-detects causal-LM
            # mode on batches whose labels equal their input_ids (copy tasks)
            kwargs.setdefault("causal_LM", False)
        if classification:
            kwargs.update(num_labels=info.num_labels, problem_type=info.problem_type)
            if info.id2label:
                kwargs["id2label"] = dict(info.id2label)
                kwargs["label2id"] = {v: k for k, v in info.id2label.items()}
        return model_cls(config_cls(**kwargs))

    build.__qualname__ = f"build_{module}"
    return build


def _hf(name: str) -> Callable[[], type]:
    def get() -> type:
        import transformers

        return getattr(transformers, name)

    return get


register_model("t5", "seq2seq", builder=_build_t5, model_class=_hf("T5ForConditionalGeneration"), config_class=_hf("T5Config"))
register_model(
    "pseudo_dec",
    "seq2seq",
    builder=_build_from("pseudo_decoder", "T5PseudoDecConfig", "T5PseudoDecForConditionalGeneration"),
    model_class=_variant_class("pseudo_decoder", "T5PseudoDecForConditionalGeneration"),
    config_class=_variant_class("pseudo_decoder", "T5PseudoDecConfig"),
)
register_model(
    "decoder_only",
    "causal_lm",
    builder=_build_from("decoder_only", "T5DecoderOnlyConfig", "T5DecoderOnlyForCausalLM"),
    model_class=_variant_class("decoder_only", "T5DecoderOnlyForCausalLM"),
    config_class=_variant_class("decoder_only", "T5DecoderOnlyConfig"),
)
register_model(
    "enct5",
    "classification",
    builder=_build_from("enct5", "EncT5Config", "EncT5ForSequenceClassification", classification=True),
    model_class=_variant_class("enct5", "EncT5ForSequenceClassification"),
    config_class=_variant_class("enct5", "EncT5Config"),
)
register_model("gpt2", "causal_lm", builder=_build_gpt2, model_class=_hf("GPT2LMHeadModel"), config_class=_hf("GPT2Config"))


def build_model(cfg: Any, info: BuildInfo) -> Any:
    """A fresh model, or (``cfg.init_from``) one loaded from a checkpoint with its LoadReport printed.

    Args:
        cfg: The ``model`` config section.
        info: Tokenizer/task facts.

    Returns:
        A transformers ``PreTrainedModel``; when loaded, ``model.load_report`` holds the
        :class:`t5lab.models.loading.LoadReport`.
    """
    spec = get_model_spec(cfg.variant)
    if spec.name == "pseudo_dec" and "causal_LM" not in cfg.options:
        # the harness feeds seq2seq batches; without this a task whose target equals its input
        # (copy) would be auto-detected as causal-LM mode by the pseudo decoder
        cfg = cfg.model_copy(update={"options": {**cfg.options, "causal_LM": False}})
    if cfg.init_from is None:
        return spec.builder(cfg, info)
    from t5lab.models.loading import from_pretrained_with_report

    model_cls = spec.model_class() if spec.model_class else type(spec.builder(cfg, info))
    kwargs: dict[str, Any] = dict(cfg.options)
    if spec.objective == "classification":
        kwargs.update(num_labels=info.num_labels)
    model, report = from_pretrained_with_report(model_cls, cfg.init_from, **kwargs)
    print(report.summary())
    if model.get_input_embeddings().num_embeddings != info.vocab_size:
        model.resize_token_embeddings(info.vocab_size)
    return model
