"""Typed experiment configuration: YAML in, validated and frozen ``ExperimentConfig`` out.

The data flow is one way: YAML file (or dict) -> dotted overrides -> sweep expansion -> one
validated :class:`ExperimentConfig` per sweep point. Every section is a pydantic v2 model with
``extra="forbid"``, so a misspelt key is an error that names the key and the allowed ones.

Sweep rule: **any value given as a list is a sweep axis** (model, data, train ... sections alike,
and inside option dicts). The cartesian product of all axes runs one config after another. No
field of this config is itself list-typed; inside ``options`` dicts a literal list value must be
written as a nested list (``alphabet: [[a, b, c]]`` is one point whose value is ``[a, b, c]``).

Everything here is importable without torch or Lightning (the explorer reads run configs).
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from t5lab.errors import ConfigError

Objective = Literal["causal_lm", "prefix_lm", "span_corruption"]
OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("constant", "linear", "cosine", "plateau", "cyclic")
PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "fsdp", "deepspeed")


class Section(BaseModel):
    """A config section: unknown keys refused, frozen, defaults validated too (also the base of
    the RL configs' sections, :mod:`t5lab.rl.run`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# ------------------------------------------------------------------------------------------------
# Sections
# ------------------------------------------------------------------------------------------------


class ModelConfig(Section):
    """Architecture of a fresh model, or ``init_from`` a checkpoint directory."""

    # which variant (t5, pseudo_dec, decoder_only, enct5, gpt2, or a user-registered one)
    variant: str = "t5"
    # T5 sizes (gpt2 maps them onto n_embd / n_inner / n_layer / n_head)
    d_model: int = 64
    d_ff: int = 256
    d_kv: int = 16
    num_layers: int = 2
    num_decoder_layers: int | None = None  # None: same as num_layers
    num_heads: int = 4
    dropout: float = 0.0
    feed_forward_proj: str = "relu"  # relu | gated-gelu | gelu | gated-silu ...
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    # variant options, checked against the variant's config class (e.g. prefix_lm, causal_LM)
    options: dict[str, Any] = {}
    # start from a checkpoint directory (any T5 checkpoint); the variant loads what it can
    init_from: str | None = None
    # init_from with another vocabulary size than the tokenizer's: resize the embeddings (else an error)
    resize_embeddings: bool = False

    @field_validator("variant")
    @classmethod
    def _known_variant(cls, v: str) -> str:
        from t5lab.variants import list_variants  # light: registering a variant imports no model code

        if v not in list_variants():
            raise ValueError(f"must be one of {', '.join(list_variants())} (or a variant registered with --import); got {v!r}")
        return v

    @field_validator("d_model", "d_ff", "d_kv", "num_layers", "num_heads", "relative_attention_num_buckets")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be a positive integer, got {v}")
        return v

    @field_validator("dropout")
    @classmethod
    def _prob(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1), got {v}")
        return v

    @field_validator("init_from")
    @classmethod
    def _dir_exists(cls, v: str | None) -> str | None:
        if v is not None and not (Path(v) / "config.json").is_file():
            raise ValueError(f"{v} is not a model directory (no config.json); give a save_pretrained directory")
        return v


class CurriculumConfig(Section):
    """``data.curriculum``: training steps below ``steps`` draw only inputs of at most
    ``t5lab.train.curriculum.length_limit`` tokens (``start`` at step 0, rising linearly to the
    longest training input at ``steps``); lengths count the model's input tokens, eos included."""

    start: int
    steps: int

    @field_validator("start", "steps")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v


class DataConfig(Section):
    """Task, split sizes and how text becomes training examples.

    ``t5lab.tasks.build_splits`` reads ``task``, ``options``, ``train``, ``val``, ``test`` and ``seed``.
    """

    task: str = "reverse"
    options: dict[str, Any] = {}
    # counts, or fractions in (0, 1) for file tasks; None = "the rest" (file tasks, one split)
    train: int | float | None = 2000
    val: int | float | None = 200
    test: int | float | None = 200
    max_length: int = 64  # tokens per side; longer examples are truncated (eos kept)
    truncate: bool = True  # false: an example longer than max_length is an error, not cut
    seed: int = 0
    # text tasks only: how a text becomes an example (default: causal_lm for causal variants,
    # span_corruption for seq2seq variants)
    objective: Objective | None = None
    # causal-LM formulations: loss on the target tokens only, or on every token
    loss_on: Literal["target", "all"] = "target"
    # the model writes each target token sequence backwards (a sum least significant digit first,
    # Lee et al. 2023); decodings are scored against the reversed reference and shown turned back
    reverse_target: bool = False
    # the model writes each input token before its target token (s0 v0 s1 v1 ...: a scratchpad for
    # tasks with one target token per input token); decodings are scored on the target tokens only
    echo_input: bool = False
    # span corruption (T5 paper, section 3.1.4): fraction of tokens masked, mean span length
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    # fast path (t5lab.train.fast): batch training examples of similar length (auto: when lengths vary)
    bucketing: bool | Literal["auto"] = "auto"
    # sequence packing (t5lab.train.packing, docs/packing.md): the examples of a training batch laid
    # out in fewer rows, one segment each, with per-segment masks (auto: see resolve_packing)
    packing: bool | Literal["auto"] = "auto"
    # tokens per packed row (each side for seq2seq); None: the batch's longest example. A fixed
    # length gives static batch shapes (rows padded to a multiple of 8), e.g. for torch.compile
    pack_length: int | None = None
    # length curriculum (t5lab.train.curriculum): short inputs first, all of them from `steps` on
    curriculum: CurriculumConfig | None = None

    @field_validator("pack_length")
    @classmethod
    def _pack_length(cls, v: int | None) -> int | None:
        if v is not None and v < 2:
            raise ValueError(f"must be >= 2 tokens (or null: the longest example of each batch), got {v}")
        return v

    @field_validator("max_length")
    @classmethod
    def _min_length(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"must be >= 2 (room for one token and eos), got {v}")
        return v

    @field_validator("train", "val", "test")
    @classmethod
    def _size(cls, v: int | float | None) -> int | float | None:
        if isinstance(v, float) and not 0.0 < v < 1.0:
            raise ValueError(f"a fraction must lie strictly between 0 and 1, got {v}; give a count as an int")
        if isinstance(v, int) and v < 0:
            raise ValueError(f"a count cannot be negative, got {v}")
        return v


class TokenizerConfig(Section):
    """``kind``: byte | char | unigram | word, or a path to a saved tokenizer directory."""

    kind: str = "char"
    vocab_size: int | None = None  # unigram (required) and word (the most words kept)
    min_frequency: int | None = None  # word only: how often a word must occur to get its own id (default 2)
    add_dummy_prefix: bool | None = None  # word only: the first word takes the word-start mark too (default true)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in ("byte", "char", "unigram", "word") and not Path(v).is_dir():
            raise ValueError(f"must be byte, char, unigram, word or an existing tokenizer directory; got {v!r}")
        return v

    @model_validator(mode="after")
    def _vocab(self) -> TokenizerConfig:
        if self.kind == "unigram" and not self.vocab_size:
            raise ValueError("tokenizer.vocab_size: the unigram tokenizer needs a vocab_size (e.g. 1000)")
        if self.min_frequency is not None and self.kind != "word":
            raise ValueError(f"tokenizer.min_frequency is for kind: word only; this tokenizer is {self.kind}")
        if self.add_dummy_prefix is not None and self.kind != "word":
            raise ValueError(f"tokenizer.add_dummy_prefix is for kind: word only; this tokenizer is {self.kind}")
        if self.min_frequency is not None and self.min_frequency < 1:
            raise ValueError(f"tokenizer.min_frequency={self.min_frequency}: a word must occur at least once")
        if self.kind == "word" and self.vocab_size is not None and self.vocab_size < 1:
            raise ValueError(f"tokenizer.vocab_size={self.vocab_size}: keep at least one word, or leave it unset")
        return self


class EarlyStopConfig(Section):
    monitor: str = "val_loss"
    patience: int = 3
    mode: Literal["min", "max"] = "min"
    min_delta: float = 0.0


class StopTarget(Section):
    """One ``train.stop_at`` target: reached when the metric is >= ``value`` (``mode: max``) or <=
    it (``mode: min``); ``auto``: min for loss-like names (``*loss``, ``*ppl``), else max."""

    value: float
    mode: Literal["auto", "min", "max"] = "auto"


class TrainConfig(Section):
    """Optimisation and loop settings (Lightning Trainer arguments where the names match)."""

    batch_size: int = 32
    eval_batch_size: int | None = None  # None: batch_size
    accumulate_grad_batches: int = 1
    max_epochs: int | None = None
    max_steps: int | None = 1000
    # wall-time cap on the training loop in seconds (Lightning's Trainer(max_time=...): counted from
    # the start of fit, validation included, checked after every step); None: no cap
    max_time_s: float | None = None
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: Literal["constant", "linear", "cosine", "plateau", "cyclic"] = "constant"
    plateau_factor: float = 0.5  # plateau: lr *= factor after `plateau_patience` bad validations
    plateau_patience: int = 2
    cyclic_steps: int = 200  # cyclic: steps of one half cycle (lr/10 -> lr)
    gradient_clip_val: float | None = 1.0
    # fast path (t5lab.train.fast, docs/benchmarks.md): auto = bf16-mixed only where bf16 is native,
    # torch.compile on CUDA only, fused AdamW
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"
    compile: bool | Literal["auto"] = "auto"
    fused_optimizer: bool | Literal["auto"] = "auto"
    seed: int = 0
    val_check_interval: int | float | None = None  # None: validate at each epoch end
    check_val_every_n_epoch: int | None = 1
    log_every_n_steps: int = 10
    num_samples: int = 3  # input / target / prediction lines printed after each validation
    max_new_tokens: int | None = None  # greedy decoding length; None: data.max_length
    early_stop: EarlyStopConfig | None = None
    # end the run at the first validation where every target is reached ({val_exact_match: 0.99} or
    # {val_loss: {value: 0.05, mode: min}}; t5lab.train.callbacks.StopAt)
    stop_at: dict[str, float | StopTarget] | None = None
    val_examples: int | None = None  # greedy-decoded validation examples per validation (None: all)
    # stop when the training loss exceeds this many times its first value, floored at ln(vocab size)
    # (or a validation loss is non-finite or beyond that); null: no check (a non-finite training loss
    # always stops the run)
    divergence: float | None = 100.0
    num_workers: int = 0
    progress_bar: bool = True

    @field_validator("batch_size", "accumulate_grad_batches", "log_every_n_steps")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be a positive integer, got {v}")
        return v

    @field_validator("val_examples")
    @classmethod
    def _val_examples(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be a positive number of examples or null (all), got {v}")
        return v

    @field_validator("stop_at")
    @classmethod
    def _stop_at(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        for name in v or {}:
            if not name.startswith("val_"):
                raise ValueError(f"{name!r}: give a validation metric (val_exact_match, val_loss, val_token_acc, ...)")
        return v

    @field_validator("max_time_s")
    @classmethod
    def _max_time(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError(f"must be a positive number of seconds or null (no cap), got {v}")
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"must be > 0, got {v}")
        return v

    @field_validator("divergence")
    @classmethod
    def _divergence(cls, v: float | None) -> float | None:
        if v is not None and not v > 1:
            raise ValueError(f"must be > 1 (a factor over the first training loss) or null to turn the check off, got {v}")
        return v

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v  # YAML reads `precision: 32` as an int

    @model_validator(mode="after")
    def _horizon(self) -> TrainConfig:
        if self.max_steps is None and self.max_epochs is None:
            raise ValueError("train.max_steps / train.max_epochs: give at least one (e.g. max_steps=1000)")
        if self.max_steps is not None and self.warmup_steps >= self.max_steps > 0:
            raise ValueError(f"train.warmup_steps={self.warmup_steps} must be < train.max_steps={self.max_steps}")
        if self.schedule == "plateau" and self.warmup_steps:
            raise ValueError("train.warmup_steps: the plateau schedule has no warmup; set warmup_steps=0")
        return self


class TrainerConfig(Section):
    """Lightning ``Trainer`` hardware settings."""

    # auto: the GPU where there is one, else the CPU (Lightning's choice)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = 1
    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp", "deepspeed"] = "auto"
    num_nodes: int = 1
    deterministic: bool = True
    # torch intra-op CPU threads per process (None: torch's default). Tiny models run no faster
    # with more threads, and on a busy machine 1 thread avoids spin-wait contention.
    num_threads: int | None = None


class LogConfig(Section):
    """Loggers: CSV always (metrics.csv in the run dir); TensorBoard and W&B optional."""

    csv: Literal[True] = True
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "t5lab"


class ExperimentConfig(Section):
    """One experiment: every setting a run needs, validated and frozen."""

    name: str = "run"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    train: TrainConfig = TrainConfig()
    trainer: TrainerConfig = TrainerConfig()
    log: LogConfig = LogConfig()

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer_shorthand(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v  # `tokenizer: byte`

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.=,+-]+", v):
            raise ValueError(f"must be a plain directory name (letters, digits, _ . = , + -), got {v!r}")
        return v

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able dict (tuples become lists)."""
        return _plain(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------------------
# Loading, overrides, sweeps
# ------------------------------------------------------------------------------------------------


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def read_yaml(path_or_dict: str | os.PathLike | dict[str, Any] | None) -> dict[str, Any]:
    """The raw dict of a YAML file (or a copy of a dict). ``None`` gives an empty dict."""
    if path_or_dict is None:
        return {}
    if isinstance(path_or_dict, dict):
        return copy.deepcopy(path_or_dict)
    path = Path(path_or_dict)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; give a path to a .yaml file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        line = str(err).replace("\n", " ")
        raise ConfigError(f"config file {path} is not valid YAML: {line}") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (model:, data:, train: ...)")
    raw.setdefault("name", path.stem)
    return raw


_SECTIONS: dict[str, type[BaseModel]] = {
    "model": ModelConfig,
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "train": TrainConfig,
    "trainer": TrainerConfig,
    "log": LogConfig,
}
_FREE_DICTS = {("model", "options"), ("data", "options")}  # keys inside are checked later


def _check_key(parts: list[str]) -> None:
    """Raise if a dotted key names no config field (before any value is parsed)."""
    dotted = ".".join(parts)
    if parts[0] == "name" and len(parts) == 1:
        return
    if parts[0] not in _SECTIONS:
        raise ConfigError(f"unknown config key {dotted!r}; top-level keys are: name, {', '.join(_SECTIONS)}")
    if len(parts) == 1:
        return
    cls: type[BaseModel] = _SECTIONS[parts[0]]
    if tuple(parts[:2]) in _FREE_DICTS:
        return
    if parts[0] == "train" and parts[1] == "early_stop" and len(parts) > 2:
        cls, parts = EarlyStopConfig, parts[1:]
    if parts[1] not in cls.model_fields:
        raise ConfigError(
            f"unknown config key {dotted!r}; keys of {parts[0]}: {', '.join(cls.model_fields)}"
        )


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003); the value is read as a YAML scalar/list."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} has no '='; write dotted.key=value, e.g. train.lr=3e-4")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: bad key {key!r}; write dotted.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({err.__class__.__name__})") from err
    return parts, fix_floats(value)


def apply_overrides(
    raw: dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    check_key: Callable[[list[str]], None] | None = _check_key,
    sections_only: bool = False,
) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a raw config dict (returns a new dict).

    Args:
        check_key: Refuses a key before its value is parsed (default: the experiment schema's keys);
            None when the caller's own model checks the keys (the RL configs).
        sections_only: A scalar where the key needs a section is an error; otherwise a string
            there is the ``kind`` shorthand (``tokenizer: byte``) and anything else is replaced.
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        parts, value = parse_override(item)
        if check_key is not None:
            check_key(parts)
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if not isinstance(child, dict):
                if sections_only and child is not None:
                    raise ConfigError(f"override {item!r}: {p} is not a section")
                child = {"kind": child} if isinstance(child, str) else {}  # `tokenizer: byte` shorthand
                node[p] = child
            node = child
        node[parts[-1]] = value
    return out


_FLOAT = re.compile(r"[-+]?\d*\.?\d+[eE][-+]?\d+")


def fix_floats(x: Any) -> Any:
    """Strings like ``1e-3`` (no dot) as floats, through dicts and lists: YAML 1.1 (pyyaml) reads
    them as strings, and researchers mean a float."""
    if isinstance(x, dict):
        return {k: fix_floats(v) for k, v in x.items()}
    if isinstance(x, list):
        return [fix_floats(v) for v in x]
    if isinstance(x, str) and _FLOAT.fullmatch(x):
        return float(x)
    return x


def sweep_axes(raw: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], list[Any]]]:
    """Every list-valued leaf of a raw config: ``[(("train", "lr"), [1e-3, 3e-4]), ...]``.

    ``train.betas`` is the one tuple-typed field: a flat list of two floats is its value; a list of
    pairs is a sweep. In option dicts a nested list ``[[a, b]]`` is one literal list value.
    """
    axes = []
    for key, value in raw.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            axes += sweep_axes(value, path)
        elif isinstance(value, list):
            if path == ("train", "betas") and value and not isinstance(value[0], list | tuple):
                continue
            axes.append((path, value))
    return axes


def _set(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = raw
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def _short(path: tuple[str, ...]) -> str:
    return path[-1] if path[-1] not in ("options", "kind") else ".".join(path[-2:])


def expand_sweep(raw: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """The cartesian product of every sweep axis: ``[(raw_point, suffix), ...]``.

    ``suffix`` names the point from its swept values (``"d_model=32,lr=0.001"``), or is empty when
    nothing is swept.
    """
    axes = sweep_axes(raw)
    if not axes:
        return [(copy.deepcopy(raw), "")]
    for path, values in axes:
        if not values:
            raise ConfigError(f"config key {'.'.join(path)} is an empty list; a sweep axis needs values")
    points = []
    for combo in itertools.product(*(values for _, values in axes)):
        point = copy.deepcopy(raw)
        parts = []
        for (path, _), value in zip(axes, combo):
            # a nested list in an option dict stands for one literal list value
            _set(point, path, value)
            parts.append(f"{_short(path)}={_fmt(value)}")
        points.append((point, ",".join(parts)))
    return points


def _fmt(value: Any) -> str:
    text = "-".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^\w.+-]", "_", text)


def validate(raw: dict[str, Any]) -> ExperimentConfig:
    """A raw (sweep-free) dict -> :class:`ExperimentConfig`; errors become one-line ConfigErrors.

    Checks each section on its own (keys, types, ranges); :func:`load_config` and :func:`load_sweep`
    add the checks across sections (:func:`t5lab.plan.resolve`).
    """
    raw = fix_floats(raw)
    for section, cls in _SECTIONS.items():  # unknown keys first, with the allowed ones listed
        value = raw.get(section)
        if isinstance(value, dict):
            for key in value:
                if key not in cls.model_fields:
                    raise ConfigError(
                        f"unknown config key '{section}.{key}'; keys of {section}: {', '.join(cls.model_fields)}"
                    )
    for key in raw:
        if key != "name" and key not in _SECTIONS:
            raise ConfigError(f"unknown config key {key!r}; top-level keys are: name, {', '.join(_SECTIONS)}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(one_line(err)) from None


def one_line(err: ValidationError, keys_hint: str = "") -> str:
    """The first error of a config's validation as one line that names the key.

    ``keys_hint`` follows an unknown key (where to read the allowed ones). A validator's message
    that already names its key (``config key X: ...``, ``X.y: ...``) is kept as it is.
    """
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "literal_error":
        return f"config key {loc}: {msg}; got {e.get('input')!r}"
    if e["type"] == "extra_forbidden":
        return f"unknown config key {loc!r}" + (f"; {keys_hint}" if keys_hint else "")
    if e["type"] == "missing":
        return f"config key {loc} is missing; add it to the YAML or pass {loc}=..."
    if e["type"] == "value_error" and (
        msg.startswith("config key ") or (msg.split(" ", 1)[0].count(".") >= 1 and ":" in msg.split(" ", 1)[0])
    ):
        return msg  # the validator already named the key
    got = e.get("input")
    tail = f" (got {got!r})" if e["type"] not in ("value_error", "assertion_error") and not isinstance(got, dict) else ""
    return f"config key {loc or '(top level)'}: {msg}{tail}"


def load_config(
    path_or_dict: str | os.PathLike | dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Load one experiment config from a YAML file or dict, applying ``dotted.key=value`` overrides.

    Args:
        path_or_dict: A YAML path, a dict of sections, or None for the defaults.
        overrides: ``["train.lr=3e-4", "model.variant=gpt2"]``; values are YAML scalars/lists.

    Returns:
        The validated, frozen config.

    Raises:
        ConfigError: Unknown key, wrong type, impossible combination, or a sweep (use
            :func:`load_sweep` for configs with list values).
    """
    raw = apply_overrides(read_yaml(path_or_dict), overrides)
    axes = sweep_axes(raw)
    if axes:
        path, values = axes[0]
        raise ConfigError(
            f"config key {'.'.join(path)}={values} is a sweep (a list); use load_sweep() or `t5lab train` to run it"
        )
    cfg = validate(raw)
    _resolve(cfg)
    return cfg


def _resolve(cfg: ExperimentConfig) -> Any:
    # The cross-section checks need the variants and tasks, which the schema above never imports:
    # t5lab.plan imports them (and not this module), so the edge runs one way only.
    from t5lab.plan import resolve

    return resolve(cfg)


def load_sweep(
    path_or_dict: str | os.PathLike | dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> list[tuple[ExperimentConfig, str]]:
    """Every point of a sweep, validated up front: ``[(config, suffix), ...]``.

    A config without lists is a one-point sweep with suffix ``""``. All points are validated and
    resolved (:func:`t5lab.plan.resolve`: split sizes, task options, ``init_from`` ...) before any run
    starts, so a bad value in the last point fails fast.
    """
    return [(plan.cfg, suffix) for plan, suffix in load_plans(path_or_dict, overrides)]


def load_plans(
    path_or_dict: str | os.PathLike | dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> list[tuple[Any, str]]:
    """Every point of a sweep as a checked :class:`t5lab.plan.Plan`: ``[(plan, suffix), ...]``.

    A point's error names the point (``sweep point 2/2 (train=100000): ...``) when there are several.
    """
    raw = apply_overrides(read_yaml(path_or_dict), overrides)
    points = expand_sweep(raw)
    plans = []
    for i, (point, suffix) in enumerate(points):
        try:
            plans.append((_resolve(validate(point)), suffix))
        except ConfigError as err:
            if len(points) == 1:
                raise
            raise ConfigError(f"sweep point {i + 1}/{len(points)} ({suffix}): {err}") from None
    return plans


def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file + ``os.replace``)."""
    from t5lab.fileio import atomic_write_text

    atomic_write_text(path, cfg.to_yaml())
