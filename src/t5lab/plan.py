"""A config resolved once: :func:`resolve` turns an ``ExperimentConfig`` into a :class:`Plan`.

The plan carries what the rest of a run asks about its config (the :class:`~t5lab.variants.Variant`,
the task, the tokenizer spec, the formulation kind and the text objective), decided once, and
:func:`resolve` makes every check that spans sections (variant options, variant x task x
objective, packing, split sizes against the task, ``init_from`` holding a checkpoint of the
variant's family and, where the tokenizer's size is known, a vocabulary of that size, tokenizer
settings, label names), so that a sweep can check every point before
the first one runs (``t5lab.config.load_sweep`` resolves each).

Imports: variants and tasks, never ``t5lab.config`` (which calls :func:`resolve` from its loaders)
nor torch or transformers (a variant's config class is imported only when ``model.options`` needs
checking against it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t5lab.errors import ConfigError
from t5lab.tasks import get_task
from t5lab.tasks.base import check_sizes
from t5lab.variants import Variant, get_variant, list_variants

if TYPE_CHECKING:
    from t5lab.config import ExperimentConfig
    from t5lab.tasks import Task


@dataclass(frozen=True)
class TokenizerSpec:
    """What tokenizer a run builds: ``kind`` byte | char | unigram | word | a saved tokenizer directory."""

    kind: str
    vocab_size: int | None = None

    @property
    def is_directory(self) -> bool:
        return self.kind not in ("byte", "char", "unigram", "word")

    def known_size(self, task: Task) -> int | None:
        """The vocabulary size the run's tokenizer will have, when known without building it."""
        from t5lab.tokenizers import known_size

        return known_size(self.kind, alphabet=task.alphabet() if self.kind == "char" else None)


@dataclass(frozen=True, eq=False)
class Plan:
    """A checked config and what it resolves to.

    Attributes:
        cfg: The validated config.
        variant: Its model variant.
        task: The task, built once from ``data.task`` / ``data.options``.
        tokenizer: The tokenizer spec.
        kind: The formulation kind (seq2seq | prefix_lm | causal_lm | classification).
        objective: The text objective (text tasks) or None.
    """

    cfg: ExperimentConfig
    variant: Variant
    task: Task
    tokenizer: TokenizerSpec
    kind: str
    objective: str | None

    @property
    def num_labels(self) -> int:
        return getattr(self.task, "num_labels", 2)

    @property
    def problem_type(self) -> str | None:
        return getattr(self.task, "problem_type", None)


def resolve(cfg: ExperimentConfig) -> Plan:
    """Resolve and check a validated config.

    Raises:
        ConfigError: One line naming the key, for any combination that cannot run.
    """
    variant = get_variant(cfg.model.variant)
    variant.check_options(dict(cfg.model.options))
    task = get_task(cfg.data.task, **dict(cfg.data.options))
    _check_label_names(cfg)
    d = cfg.data
    try:
        check_sizes(task, d.train, d.val, d.test)
    except ConfigError as err:
        raise ConfigError(f"config key data.train/val/test: {err}") from None
    kind, objective = formulation_kind(variant, cfg, task)
    check_packing(d, kind)
    if cfg.model.init_from is not None:
        variant.check_checkpoint(cfg.model.init_from)
    tokenizer = TokenizerSpec(cfg.tokenizer.kind, cfg.tokenizer.vocab_size)
    _check_tokenizer(tokenizer)
    if cfg.model.init_from is not None and not cfg.model.resize_embeddings:
        _check_vocab(cfg.model.init_from, tokenizer.known_size(task))
    return Plan(cfg, variant, task, tokenizer, kind, objective)


def _check_label_names(cfg: ExperimentConfig) -> None:
    names = cfg.data.options.get("label_names")
    if names is not None and not isinstance(names, list | tuple):
        raise ConfigError(
            f"config key data.options.label_names={names!r}: give a list of class names in id order, "
            "e.g. label_names: [[neg, pos]] (a nested list: a plain list would be a sweep)"
        )


def _check_tokenizer(spec: TokenizerSpec) -> None:
    if spec.kind == "unigram" and spec.vocab_size is not None and spec.vocab_size < 8:
        raise ConfigError(f"config key tokenizer.vocab_size={spec.vocab_size}: a unigram vocabulary needs at least 8 entries")
    if spec.is_directory and not (Path(spec.kind) / "tokenizer_config.json").is_file():
        raise ConfigError(
            f"config key tokenizer.kind={spec.kind}: the directory holds no saved tokenizer (tokenizer_config.json); "
            "give a tokenizer.save_pretrained directory, or byte / char / unigram / word"
        )


def _check_vocab(src: str, size: int | None) -> None:
    """``init_from``'s vocabulary against the tokenizer's size, where that is known now (the run
    checks it again with the built tokenizer, which covers unigram and saved tokenizers)."""
    theirs = json.loads((Path(src) / "config.json").read_text()).get("vocab_size")  # check_checkpoint read it
    if size is None or not isinstance(theirs, int) or theirs == size:
        return
    raise ConfigError(
        f"config key model.init_from={src}: the model has a vocabulary of {theirs} tokens, the tokenizer "
        f"{size}; use the model's tokenizer (tokenizer: {src}) or set model.resize_embeddings=true to resize"
    )


def _names(pred: Any) -> str:
    return ", ".join(v for v in list_variants() if pred(get_variant(v)))


def _echo_problem(cfg: ExperimentConfig, kind: str) -> str | None:
    """Why ``data.echo_input`` cannot pair input token j with target token j here (None: it can)."""
    if kind == "classification":
        return f"the {cfg.data.task!r} task has labels, not one target token per input token"
    if kind == "text":
        return f"the text task {cfg.data.task!r} has no input tokens to pair"
    if cfg.data.reverse_target:
        return "it pairs input token j with target token j, which data.reverse_target=true moves"
    return None


def formulation_kind(variant: Variant, cfg: ExperimentConfig, task: Task) -> tuple[str, str | None]:
    """``(formulation kind, text objective or None)`` for a variant, config and task.

    Raises:
        ConfigError: The variant cannot train on the task (e.g. a classifier on a seq2seq task), or
            the text objective / loss setting contradicts the variant (e.g. prefix_lm on gpt2).
    """
    model_obj = variant.kind_of(dict(cfg.model.options))
    kind = task.kind
    objective = cfg.data.objective
    name = variant.name
    if kind != "text" and objective is not None:
        raise ConfigError(
            f"config key data.objective={objective}: text objectives apply to text tasks only; "
            f"task {cfg.data.task!r} is {kind}, remove data.objective"
        )
    if cfg.data.echo_input and (why := _echo_problem(cfg, kind)):
        raise ConfigError(f"config key data.echo_input=true: {why}; set data.echo_input=false")
    if model_obj == "classification" or kind == "classification":
        if model_obj != kind:
            if kind == "classification":
                other = f"a classification variant ({_names(lambda v: v.objective == 'classification')})"
            else:
                other = _names(lambda v: v.generates)
            raise ConfigError(
                f"config key model.variant={name}: a {model_obj} variant cannot train on the {kind} task "
                f"{cfg.data.task!r}; use {other} (or a {model_obj} task)"
            )
        if cfg.data.reverse_target:
            raise ConfigError(
                f"config key data.reverse_target=true: the {cfg.data.task!r} task has labels, not token "
                "sequences to reverse; set data.reverse_target=false"
            )
        return "classification", None
    if kind == "text":
        if objective is None:
            objective = "span_corruption" if model_obj == "seq2seq" else model_obj
        if model_obj == "seq2seq" and objective == "causal_lm":
            raise ConfigError(
                f"config key data.objective=causal_lm: the seq2seq variant {name!r} needs an input; "
                f"use span_corruption or prefix_lm, or a decoder-only variant ({_names(lambda v: v.objective == 'causal_lm')})"
            )
        if model_obj == "causal_lm" and objective == "prefix_lm":
            if variant.prefix_lm_option is not None:
                hint = f"set model.options.{variant.prefix_lm_option}=true"
            else:
                with_prefix = [get_variant(v) for v in list_variants() if get_variant(v).prefix_lm_option]
                hint = "use " + " or ".join(
                    f"variant {v.name} with model.options.{v.prefix_lm_option}=true" for v in with_prefix
                )
            raise ConfigError(
                f"config key data.objective=prefix_lm: variant {name!r} has no bidirectional prefix; {hint}, "
                "or use data.objective=causal_lm"
            )
    if model_obj == "prefix_lm" and cfg.data.loss_on == "all":
        raise ConfigError(
            "config key data.loss_on=all: with a bidirectional prefix (prefix_lm) the prefix tokens see themselves, "
            "so a loss on them is meaningless; use data.loss_on=target"
        )
    if model_obj == "seq2seq" and cfg.data.loss_on == "all":
        raise ConfigError(
            f"config key data.loss_on=all applies to causal-LM variants ({_names(lambda v: v.objective == 'causal_lm')}); use target"
        )
    return model_obj, objective


def check_packing(data: Any, kind: str) -> None:
    """``data.packing`` / ``data.pack_length`` against the formulation kind (one-line ConfigErrors)."""
    if kind == "classification":
        if data.packing is True:
            raise ConfigError(
                "config key data.packing=true: classification variants read one sequence per row, "
                "so packing does not apply; set data.packing=auto or false"
            )
        if data.pack_length is not None:
            raise ConfigError("config key data.pack_length: packing does not apply to classification; remove it")
        return
    if data.pack_length is None:
        return
    if data.packing is False:
        raise ConfigError("config key data.pack_length is set but data.packing=false; remove pack_length or pack")
    # the longest example the formulation can build (each side for seq2seq; input + target otherwise),
    # so that no example ever fails to fit a row
    longest = data.max_length if kind == "seq2seq" else 2 * data.max_length
    if data.pack_length < longest:
        raise ConfigError(
            f"config key data.pack_length={data.pack_length}: {kind} examples can be {longest} tokens long "
            f"(data.max_length={data.max_length}{'' if kind == 'seq2seq' else ', input + target'}); "
            f"use pack_length >= {longest}"
        )
