"""Model variants: one :class:`Variant` object per ``model.variant`` name, the only place that names one.

A variant holds everything the rest of t5lab asks about a model family, so that no other module
branches on a variant's name or class:

- ``name``, the HF ``model_types`` it owns (value-head types included) and its ``family``
  (``init_from`` accepts checkpoints of the same family);
- its config / model / value-head classes, as zero-argument getters (registering imports nothing);
- ``objective``: ``seq2seq`` | ``causal_lm`` | ``classification``; a ``causal_lm`` variant with a
  ``prefix_lm_option`` trains as ``prefix_lm`` when that option is true;
- behaviours: :meth:`Variant.kind_of` (formulation kind of a config or a loaded model),
  :meth:`Variant.new_tokens` (the continuation of a ``generate`` output), ``segment_ids``
  (the model takes packed batches natively), ``generates`` (PPO / sampling);
- :meth:`Variant.build` (fresh from the ``model:`` section, or initialised from ``init_from``).

:func:`variant_of` answers for a loaded model (its ``config.model_type``) or a run / model
directory (``config.yaml``'s ``model.variant``, else ``config.json``'s ``model_type``: no torch).

This module imports neither torch nor transformers: ``t5lab --help`` and config validation list
the variant names from here.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from t5lab.errors import ConfigError, T5LabError

ModelObjective = Literal["seq2seq", "prefix_lm", "causal_lm", "classification"]
OBJECTIVES: tuple[str, ...] = ("seq2seq", "prefix_lm", "causal_lm", "classification")
# how the explorer treats a model of each objective (docs/developing.md, "Contracts")
_MODEL_KIND = {"seq2seq": "seq2seq", "prefix_lm": "causal", "causal_lm": "causal", "classification": "classifier"}
_AUTO_CLASS = {
    "seq2seq": "AutoModelForSeq2SeqLM",
    "prefix_lm": "AutoModelForCausalLM",
    "causal_lm": "AutoModelForCausalLM",
    "classification": "AutoModelForSequenceClassification",
}


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
    digit_token_ids: tuple[int, ...] | None = None  # one token per digit 0-9, or None

    @classmethod
    def for_run(cls, cfg: Any, task: Any, tokenizer: Any) -> BuildInfo:
        """What a run's model is built with: the tokenizer's ids, the task's labels, and room for
        an input and a target of ``data.max_length`` each in one sequence (decoder-only models)."""
        return cls(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            max_length=2 * cfg.data.max_length + 8,
            num_labels=getattr(task, "num_labels", 2),
            problem_type=getattr(task, "problem_type", None),
            id2label=getattr(task, "id2label", None),
            digit_token_ids=_digit_ids(tokenizer),
        )


def _digit_ids(tokenizer: Any) -> tuple[int, ...] | None:
    """The ids of the digits 0-9 when the tokenizer gives each digit a token of its own, the same
    one alone and inside a number (a word tokenizer's word-start mark makes them differ)."""
    alone = [list(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in "0123456789"]
    if any(len(i) != 1 for i in alone) or len({i[0] for i in alone}) != 10:
        return None
    ids = tuple(i[0] for i in alone)
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        return None
    for number in ("0123456789", "9876543210"):
        if list(tokenizer(number, add_special_tokens=False)["input_ids"]) != [ids[int(c)] for c in number]:
            return None
    return ids


Builder = Callable[[Any, BuildInfo], Any]
ClassGetter = Callable[[], type]


@dataclass(frozen=True, eq=False)
class Variant:
    """A registered model variant (see the module docstring).

    Attributes:
        name: The ``model.variant`` name.
        builder: ``builder(model_cfg, info) -> PreTrainedModel`` for a fresh model.
        objective: seq2seq | causal_lm | classification (prefix_lm: always a prefix LM).
        model_class: Getter of the model class (loads ``init_from``); None: the built model's class.
        config_class: Getter of the HF config class; its fields are the allowed ``model.options``.
        model_types: HF ``model_type`` values saved by this variant's models (value heads included).
        value_head: Getter of the value-head model class PPO trains (None: no PPO policy).
        family: Checkpoint family; ``init_from`` accepts a checkpoint of a variant of the same family.
        prefix_lm_option: Config option that makes a ``causal_lm`` variant a prefix LM.
        option_defaults: ``model.options`` the harness sets unless the config does.
        refused_options: option -> (refused value, one-line reason) for settings the harness cannot train.
        segment_ids: The model takes packed batches (``segment_ids``) in its own forward.
    """

    name: str
    builder: Builder
    objective: str = "seq2seq"
    model_class: ClassGetter | None = None
    config_class: ClassGetter | None = None
    model_types: tuple[str, ...] = ()
    value_head: ClassGetter | None = None
    family: str = "t5"
    prefix_lm_option: str | None = None
    option_defaults: dict[str, Any] = field(default_factory=dict)
    refused_options: dict[str, tuple[Any, str]] = field(default_factory=dict)
    segment_ids: bool = False

    # -- what it trains with ---------------------------------------------------------------------
    def option(self, options: Any, key: str, default: Any = None) -> Any:
        """An option's value: from a ``model.options`` dict or a loaded model's config, else the
        variant's default, else its config class's default."""
        if isinstance(options, dict):
            if key in options:
                return options[key]
        elif hasattr(options, key):
            return getattr(options, key)
        if key in self.option_defaults:
            return self.option_defaults[key]
        if self.config_class is not None:
            cls = self.config_class()
            if dataclasses.is_dataclass(cls):
                for f in dataclasses.fields(cls):
                    if f.name == key and f.default is not dataclasses.MISSING:
                        return f.default
            return getattr(cls, key, default)
        return default

    def kind_of(self, options: Any = None) -> str:
        """The formulation kind for ``model.options`` (a dict) or a loaded model's config.

        A ``causal_lm`` variant whose prefix option is true (the decoder-only T5 in prefix-LM mode,
        Raffel et al. 2020, section 3.2.1) trains as ``prefix_lm``.
        """
        key = self.prefix_lm_option
        if self.objective == "causal_lm" and key is not None:
            # the option is off unless set: no need to import the config class to read its default
            value = options.get(key, False) if isinstance(options, dict) else getattr(options, key, False)
            if bool(value):
                return "prefix_lm"
        return self.objective

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every formulation kind the variant can train with."""
        return ("causal_lm", "prefix_lm") if self.prefix_lm_option is not None else (self.objective,)

    def is_prefix_lm(self, model_or_config: Any) -> bool:
        """True when a loaded model reads its prompt bidirectionally (takes ``prefix_mask``)."""
        config = getattr(model_or_config, "config", model_or_config)
        return self.kind_of(config) == "prefix_lm"

    def model_kind(self) -> str:
        """The explorer's view: ``seq2seq``, ``causal`` or ``classifier``."""
        return _MODEL_KIND[self.objective]

    def auto_class(self) -> Any:
        """The transformers Auto class that loads a saved model of this variant."""
        import transformers

        return getattr(transformers, _AUTO_CLASS[self.objective])

    @property
    def generates(self) -> bool:
        """Whether the variant generates text (sampling, exact match, PPO); classifiers do not."""
        return self.objective != "classification"

    def new_tokens(self, generated: Any, prompt_width: int) -> Any:
        """The continuation of a ``generate`` output: an encoder-decoder's output starts with the
        decoder start token, a decoder's with its (left-padded) prompt of ``prompt_width`` tokens."""
        return generated[:, 1:] if self.objective == "seq2seq" else generated[:, prompt_width:]

    # -- options ------------------------------------------------------------------------------
    def option_names(self) -> list[str] | None:
        """Allowed ``model.options`` keys (fields of the config class), or None for any."""
        if self.config_class is None:
            return None
        cls = self.config_class()
        if dataclasses.is_dataclass(cls):
            return [f.name for f in dataclasses.fields(cls)]
        import inspect

        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise a one-line ConfigError for an option the variant does not have or the harness refuses."""
        for key, (value, reason) in self.refused_options.items():
            if key in options and options[key] == value:
                raise ConfigError(f"config key model.options.{key}={json.dumps(value)}: {reason}")
        if not options:
            return  # nothing to check: no need to import the config class
        allowed = self.option_names()
        if allowed is None:
            return
        for key in options:
            if key not in allowed:
                raise ConfigError(
                    f"config key model.options.{key}: not an option of variant {self.name!r}; "
                    f"its options are the fields of its config class, e.g. {', '.join(sorted(allowed)[:12])}"
                )
        # the field types of a @strict config class (its validators), checked before any work starts
        validators = getattr(self.config_class(), "__validators__", {})
        for key, value in options.items():
            for check in validators.get(key, ()):
                try:
                    check(value)
                except (TypeError, ValueError) as err:
                    why = str(err).splitlines()[0] if str(err) else type(err).__name__
                    raise ConfigError(f"config key model.options.{key}={json.dumps(value, default=str)}: {why}") from None

    # -- building -------------------------------------------------------------------------------
    def build(self, cfg: Any, info: BuildInfo) -> Any:
        """A fresh model, or (``cfg.init_from``) one loaded from a checkpoint with its LoadReport printed.

        Args:
            cfg: The ``model`` config section.
            info: Tokenizer/task facts.

        Returns:
            A transformers ``PreTrainedModel``; when loaded, ``model.load_report`` holds the
            :class:`t5lab.models.loading.LoadReport`.
        """
        missing = {k: v for k, v in self.option_defaults.items() if k not in cfg.options}
        if missing:
            cfg = cfg.model_copy(update={"options": {**cfg.options, **missing}})
        if cfg.init_from is None:
            return self.builder(cfg, info)
        return self.init_from(cfg, info)

    def init_from(self, cfg: Any, info: BuildInfo) -> Any:
        """Initialise from the checkpoint ``cfg.init_from`` (any checkpoint of the variant's family)."""
        from t5lab.models.loading import from_pretrained_with_report

        model_cls = self.model_class() if self.model_class else type(self.builder(cfg, info))
        kwargs: dict[str, Any] = dict(cfg.options)
        if self.objective == "classification":
            kwargs.update(num_labels=info.num_labels)
        model, report = from_pretrained_with_report(model_cls, cfg.init_from, **kwargs)
        print(report.summary())
        if model.get_input_embeddings().num_embeddings != info.vocab_size:
            model.resize_token_embeddings(info.vocab_size)
        # from_pretrained returns the model in eval mode, and Lightning keeps the mode it is given:
        # without this a run from init_from would train with dropout off (a fresh model is in train mode)
        return model.train()

    def check_checkpoint(self, path: str | os.PathLike, key: str = "model.init_from") -> None:
        """Raise a one-line ConfigError unless ``path`` holds a checkpoint this variant can start from."""
        model_type = _model_type_of_dir(Path(path), key)
        owner = _BY_MODEL_TYPE.get(model_type)
        if owner is None or owner.family != self.family:
            known = ", ".join(sorted(t for v in _REGISTRY.values() if v.family == self.family for t in v.model_types))
            raise ConfigError(
                f"config key {key}={path}: it holds a {model_type!r} model; variant {self.name!r} starts from "
                f"a {self.family} checkpoint ({known or self.family}); give a directory saved by such a model"
            )

    def __repr__(self) -> str:
        return f"Variant({self.name!r}, objective={self.objective!r}, model_types={list(self.model_types)})"


_REGISTRY: dict[str, Variant] = {}
_BY_MODEL_TYPE: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    """Register ``variant`` (its name and model types); re-registering the same builder is harmless.

    Raises:
        ValueError: Unknown objective, or the name or a model type is taken by another variant.
    """
    if variant.objective not in OBJECTIVES:
        raise ValueError(
            f"variant {variant.name!r}: objective must be one of {', '.join(OBJECTIVES)}, got {variant.objective!r}"
        )
    old = _REGISTRY.get(variant.name)
    if old is not None and _qualname(old.builder) != _qualname(variant.builder):
        raise ValueError(f"model variant {variant.name!r} is already registered; choose another name")
    for model_type in variant.model_types:
        owner = _BY_MODEL_TYPE.get(model_type)
        if owner is not None and owner.name != variant.name:
            raise ValueError(f"model type {model_type!r} already belongs to variant {owner.name!r}")
    _REGISTRY[variant.name] = variant
    for model_type in variant.model_types:
        _BY_MODEL_TYPE[model_type] = variant
    return variant


def _qualname(fn: Any) -> tuple[str | None, str | None]:
    return getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)


def unregister(name: str) -> None:
    """Forget a variant (tests register throw-away ones)."""
    variant = _REGISTRY.pop(name, None)
    for model_type in getattr(variant, "model_types", ()):
        _BY_MODEL_TYPE.pop(model_type, None)


def _lazy(cls_or_fn: Any) -> ClassGetter | None:
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
    model_class: type | ClassGetter | None = None,
    config_class: type | ClassGetter | None = None,
    model_types: tuple[str, ...] | list[str] | None = None,
    value_head: type | ClassGetter | None = None,
    family: str = "t5",
    prefix_lm_option: str | None = None,
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
        model_types: HF model types saved by the variant's models (default: the ``model_type`` of
            ``config_class`` and of ``value_head``'s config when they are given as classes).
        value_head: The value-head model class (or a getter) that ``t5lab ppo`` trains.
        family: Checkpoint family accepted by ``model.init_from`` (``t5``: any T5-family checkpoint).
        prefix_lm_option: For a ``causal_lm`` variant, the config option that makes it a prefix LM.

    Returns:
        The builder (decorator form) or None.

    Raises:
        ValueError: Unknown objective, or the name is taken by a different builder.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"register_model({name!r}): objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if model_types is None:
        found = [getattr(c, "model_type", None) for c in (config_class, getattr(value_head, "config_class", None))]
        model_types = tuple(t for t in found if isinstance(t, str) and t)

    def decorate(fn: Builder) -> Builder:
        register(
            Variant(
                name,
                fn,
                objective,
                model_class=_lazy(model_class),
                config_class=_lazy(config_class),
                model_types=tuple(model_types),
                value_head=_lazy(value_head),
                family=family,
                prefix_lm_option=prefix_lm_option,
            )
        )
        return fn

    if builder is not None:
        decorate(builder)
        return None
    return decorate


def list_variants() -> list[str]:
    """Names of every registered variant (built-ins first)."""
    return list(_REGISTRY)


def get_variant(name: str | Variant) -> Variant:
    """The :class:`Variant` called ``name``; a one-line ConfigError lists the known names otherwise."""
    if isinstance(name, Variant):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model variant {name!r}; known: {', '.join(_REGISTRY)} (register one with @register_model)"
        ) from None


def variant_for_model_type(model_type: str) -> Variant:
    """The variant that owns an HF ``model_type`` (one-line T5LabError otherwise)."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise T5LabError(
            f"model type {model_type!r} belongs to no t5lab variant (known: {', '.join(sorted(_BY_MODEL_TYPE))}); "
            "register one with @register_model(..., model_types=...) and load it with --import"
        ) from None


def _model_type_of_dir(path: Path, key: str = "model") -> str:
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"config key {key}={path}: not a model directory (no config.json); give a save_pretrained directory")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        raise ConfigError(f"config key {key}={path}: config.json is not readable JSON; give a save_pretrained directory") from None
    if not isinstance(model_type, str):
        raise ConfigError(f"config key {key}={path}: config.json has no model_type; give a save_pretrained directory")
    return model_type


def variant_of(model_or_dir: Any) -> Variant:
    """The variant of a loaded model (its ``config.model_type``) or of a run / model directory.

    A run directory answers from its ``config.yaml`` (``model.variant``), a model directory from its
    ``config.json`` (``model_type``); neither imports torch.

    Raises:
        T5LabError: The model type belongs to no registered variant, or the path holds no model.
    """
    if isinstance(model_or_dir, str | os.PathLike):
        path = Path(model_or_dir)
        run_config = path / "config.yaml"
        if run_config.is_file():
            import yaml

            raw = yaml.safe_load(run_config.read_text()) or {}
            name = (raw.get("model") or {}).get("variant", "t5") if isinstance(raw, dict) else "t5"
            if name in _REGISTRY:
                return _REGISTRY[name]
            path = path / "model"
        if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
            path = path / "model"
        try:
            return variant_for_model_type(_model_type_of_dir(path, "model directory"))
        except ConfigError as err:
            raise T5LabError(str(err).removeprefix("config key ")) from None
    config = getattr(model_or_dir, "config", model_or_dir)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str):
        raise T5LabError(f"{type(model_or_dir).__name__} has no config.model_type; give a transformers model")
    return variant_for_model_type(model_type)


# ------------------------------------------------------------------------------------------------
# The built-in variants
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


def _hf(name: str) -> ClassGetter:
    def get() -> type:
        import transformers

        return getattr(transformers, name)

    return get


def _t5lab(module: str, name: str) -> ClassGetter:
    def get() -> type:
        mod = importlib.import_module(f"t5lab.models.{module}")
        try:
            return getattr(mod, name)
        except AttributeError:
            raise ValueError(f"model variant class {name} is not available yet in t5lab.models.{module}") from None

    return get


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
    model = GPT2LMHeadModel(config)
    # transformers leaves GPT-2's loss_type unset and then warns on every loss call (warning_once,
    # which torch.compile cannot trace); its loss is the causal-LM loss
    model.loss_type = "ForCausalLM"
    return model


def _build_with(config_class: ClassGetter, model_class: ClassGetter, classification: bool = False) -> Builder:
    def build(cfg: Any, info: BuildInfo) -> Any:
        kwargs = t5_config_kwargs(cfg, info)
        config_cls = config_class()
        default_rows = getattr(config_cls, "max_position_embeddings", None)
        if default_rows is not None and "max_position_embeddings" not in kwargs:
            # learned position tables cover the run's longest sequence (as gpt2's n_positions does);
            # never fewer rows than the class default, so runs that fit it keep the same init
            kwargs["max_position_embeddings"] = max(default_rows, info.max_length)
        if kwargs.get("target_positions") == "digits" and not kwargs.get("digit_token_ids"):
            if info.digit_token_ids is None:
                raise ConfigError(
                    "model.options.target_positions=digits numbers digit tokens, but this tokenizer does not "
                    "give each digit 0-9 a token of its own; use tokenizer: char (or byte)"
                )
            kwargs["digit_token_ids"] = list(info.digit_token_ids)
        if classification:
            kwargs.update(num_labels=info.num_labels, problem_type=info.problem_type)
            if info.id2label:
                kwargs["id2label"] = dict(info.id2label)
                kwargs["label2id"] = {v: k for k, v in info.id2label.items()}
        return model_class()(config_cls(**kwargs))

    return build


def _t5lab_variant(name: str, module: str, config: str, model: str, **kwargs: Any) -> Variant:
    config_class, model_class = _t5lab(module, config), _t5lab(module, model)
    builder = _build_with(config_class, model_class, classification=kwargs.get("objective") == "classification")
    builder.__qualname__ = f"build_{module}"
    return Variant(name, builder, model_class=model_class, config_class=config_class, **kwargs)


def _value_head(name: str) -> ClassGetter:
    return _t5lab("value_head", name)


register(
    Variant(
        "t5",
        _build_t5,
        "seq2seq",
        model_class=_hf("T5ForConditionalGeneration"),
        config_class=_hf("T5Config"),
        model_types=("t5", "t5_with_value_head"),
        value_head=_value_head("T5HeadWithValueModel"),
    )
)
register(
    _t5lab_variant(
        "pseudo_dec",
        "pseudo_decoder",
        "T5PseudoDecConfig",
        "T5PseudoDecForConditionalGeneration",
        objective="seq2seq",
        model_types=("t5_pseudo_dec", "t5_pseudo_dec_with_value_head"),
        value_head=_value_head("T5PseudoDecWithValueHead"),
        # the harness feeds seq2seq batches; without this the pseudo decoder auto-detects causal-LM
        # mode on batches whose labels equal their input_ids (copy tasks)
        option_defaults={"causal_LM": False},
        refused_options={
            "causal_LM": (
                True,
                "the harness trains pseudo_dec on seq2seq batches (generate() is non-causal); "
                "set causal_LM=false or leave it out",
            )
        },
    )
)
register(
    _t5lab_variant(
        "decoder_only",
        "decoder_only",
        "T5DecoderOnlyConfig",
        "T5DecoderOnlyForCausalLM",
        objective="causal_lm",
        model_types=("t5_decoder_only", "t5_decoder_only_with_value_head"),
        value_head=_value_head("T5DecoderOnlyWithValueHead"),
        prefix_lm_option="prefix_lm",
        segment_ids=True,
    )
)
register(
    _t5lab_variant(
        "enct5",
        "enct5",
        "EncT5Config",
        "EncT5ForSequenceClassification",
        objective="classification",
        model_types=("enct5",),
    )
)
register(
    Variant(
        "gpt2",
        _build_gpt2,
        "causal_lm",
        model_class=_hf("GPT2LMHeadModel"),
        config_class=_hf("GPT2Config"),
        model_types=("gpt2",),
        family="gpt2",
    )
)
