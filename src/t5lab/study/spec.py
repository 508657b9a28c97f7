"""Study files: a base config, axes, seeds and a fairness rule, expanded into checked points.

A study file (docs/study.md)::

    name: arch
    base: ../text_lm.yaml          # a config path (relative to the study file) or an inline mapping
    axes:
      variants:                    # label -> overrides (dotted keys), or a list of variant names
        causal: {model.variant: decoder_only}
        prefix: {model.variant: decoder_only, model.options.prefix_lm: true}
        encdec: {model.variant: t5}
      tasks: {reverse: {data.task: reverse, data.options: {min_len: 4, max_len: 8}}, text: {data.task: botchan}}
      objectives: [lm, span_corruption]
      train.lr: [1.0e-3, 3.0e-3]   # any dotted config key
    seeds: 3
    match: params                  # params | tokens | [params, tokens] | {params: causal, tokens: 200000}
    quick: {seeds: 2, set: {train.max_steps: 60}}

The axes' cartesian product gives the points; every point runs ``seeds`` times (``train.seed`` =
base seed + 0, 1, ...). Objectives apply to text tasks only: a point pairing an objective with a
seq2seq task drops it (the point appears once, objective ``-``). The objective ``lm`` is each
variant's own language-modelling objective: full causal LM (loss on every token) for a causal
decoder, prefix LM for a non-causal decoder and for encoder-decoders (Wang et al. 2022, arXiv
2204.05832, section 3.2).

Everything here is pure config work (no torch); :mod:`t5lab.study.matching` counts parameters
and tokens.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from t5lab.config import ExperimentConfig, _check_key, apply_overrides, read_yaml, validate
from t5lab.errors import ConfigError

# shortcut axes: name -> the config key a plain list value sets
SHORTCUTS = {"variants": "model.variant", "tasks": "data.task", "objectives": "data.objective", "sizes": None}
AXIS_NAMES = {"variants": "variant", "tasks": "task", "objectives": "objective", "sizes": "size"}
STUDY_KEYS = ("name", "description", "base", "axes", "seeds", "match", "metric", "threshold", "quick")
MATCH_KINDS = ("params", "tokens")
LM = "lm"  # the objective "the variant's own language modelling"
NO_OBJECTIVE = "-"
TOLERANCE = 0.05
_LABEL = re.compile(r"[\w.+-]+")


@dataclass(frozen=True)
class Level:
    """One value of an axis: a label and the dotted-key overrides it applies to the base.

    A ``tasks`` level that sets ``data.task`` replaces the base's ``data.options`` (``{}`` unless the
    level gives them): one task's options mean nothing to another.
    """

    label: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Axis:
    name: str  # variant | task | objective | size | a dotted config key
    levels: tuple[Level, ...]


@dataclass(frozen=True)
class Match:
    """The fairness rule: parameter counts matched to ``params_reference``, a common token budget."""

    params: bool = False
    params_reference: str | None = None  # a variant label (None: the first); or a count in params_target
    params_target: int | None = None
    tokens: bool = False
    tokens_budget: int | None = None  # None: each comparison group's reference point's own budget
    tolerance: float = TOLERANCE


@dataclass
class Point:
    """One point of the study: labels per axis, its raw config and one validated config per seed."""

    labels: dict[str, str]
    raw: dict[str, Any]
    configs: list[ExperimentConfig] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # params, tokens_per_example, max_steps ...

    @property
    def key(self) -> str:
        return ",".join(f"{_short(a)}={v}" for a, v in self.labels.items())

    @property
    def variant(self) -> str:
        return self.labels.get("variant", str(self.raw.get("model", {}).get("variant", "t5")))

    @property
    def group(self) -> str:
        """The labels other than the variant: the points compared with each other."""
        rest = [f"{_short(a)}={v}" for a, v in self.labels.items() if a != "variant"]
        return ",".join(rest) or "all"


@dataclass
class Study:
    name: str
    base: dict[str, Any]
    axes: list[Axis]
    seeds: int
    match: Match
    metric: str | dict[str, str] | None = None
    threshold: float | dict[str, float] | None = None
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict)  # the study file as read (quick applied)

    def seed_values(self) -> list[int]:
        first = int(self.base.get("train", {}).get("seed", 0) or 0)
        return [first + i for i in range(self.seeds)]


def _short(axis: str) -> str:
    return axis.rsplit(".", 1)[-1]


# ------------------------------------------------------------------------------------------------
# Reading a study file
# ------------------------------------------------------------------------------------------------


def read_study(path_or_dict: str | os.PathLike | dict[str, Any], overrides: list[str] | tuple[str, ...] = (), quick: bool = False) -> Study:
    """Parse a study file (or dict); ``overrides``: ``seeds=N``, ``match=...`` or dotted base-config keys.

    Raises:
        ConfigError: Any problem, in one line (unknown key or axis, seeds < 1, a bad level ...).
    """
    if isinstance(path_or_dict, dict):
        raw, where = copy.deepcopy(path_or_dict), Path.cwd()
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise ConfigError(f"study file {path} not found; give a path to a .yaml file or --builtin NAME")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"study file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"study file {path} must hold a mapping (base:, axes:, seeds: ...)")
        raw.setdefault("name", path.stem)
        where = path.parent
    for key in raw:
        if key not in STUDY_KEYS:
            raise ConfigError(f"unknown study key {key!r}; study keys are: {', '.join(STUDY_KEYS)}")
    quick_section = raw.pop("quick", None) or {}
    study_overrides, base_overrides = _split_overrides(overrides)
    if quick:
        if not isinstance(quick_section, dict):
            raise ConfigError("study key quick must be a mapping (seeds:, set: {dotted.key: value})")
        for key in quick_section:
            if key not in ("seeds", "set", "axes"):
                raise ConfigError(f"unknown key quick.{key}; quick takes seeds, set and axes")
        if "seeds" in quick_section:
            raw["seeds"] = quick_section["seeds"]
        if "axes" in quick_section:
            raw["axes"] = quick_section["axes"]
        base_overrides = [_override(k, v) for k, v in (quick_section.get("set") or {}).items()] + base_overrides
    raw.update(study_overrides)
    name = str(raw.get("name", "study"))
    if not _LABEL.fullmatch(name):
        raise ConfigError(f"study key name={name!r}: must be a plain directory name (letters, digits, _ . + -)")
    base = _base(raw.get("base"), where)
    base = apply_overrides(base, base_overrides)
    base.pop("name", None)
    seeds = raw.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"study key seeds={seeds!r}: must be an integer >= 1 (use >= 2 for confidence intervals)")
    axes = _axes(raw.get("axes") or {})
    match = _match(raw.get("match"), axes)
    metric = raw.get("metric")
    if metric is not None and not isinstance(metric, str | dict):
        raise ConfigError("study key metric: give a metric name (exact_match, loss ...) or a mapping task label -> name")
    threshold = raw.get("threshold")
    if threshold is not None and not isinstance(threshold, int | float | dict):
        raise ConfigError("study key threshold: give a number or a mapping task label -> number")
    return Study(name, base, axes, seeds, match, metric, threshold, str(raw.get("description", "")), raw)


def _split_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    study: dict[str, Any] = {}
    base: list[str] = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} has no '='; write key=value (seeds=3, train.lr=3e-4)")
        if key in ("seeds", "match", "metric", "threshold", "name"):
            study[key] = yaml.safe_load(text)
        else:
            base.append(item)
    return study, base


def _override(key: str, value: Any) -> str:
    """A ``dotted.key=value`` string for :func:`t5lab.config.apply_overrides` (JSON is YAML)."""
    return f"{key}={json.dumps(value)}"


def _base(base: Any, where: Path) -> dict[str, Any]:
    if base is None:
        raise ConfigError("study key base is missing; give a config path or an inline mapping (model:, data:, train: ...)")
    if isinstance(base, str):
        path = Path(base) if Path(base).is_absolute() else where / base
        return read_yaml(path)
    if not isinstance(base, dict):
        raise ConfigError("study key base: give a config path or an inline mapping of sections")
    return copy.deepcopy(base)


def _axes(raw: Any) -> list[Axis]:
    if not isinstance(raw, dict):
        raise ConfigError("study key axes must be a mapping: axis -> list of values or mapping label -> overrides")
    axes = []
    for name, spec in raw.items():
        axes.append(_axis(str(name), spec))
    return axes


def _axis(name: str, spec: Any) -> Axis:
    if name in SHORTCUTS:
        key = SHORTCUTS[name]
        axis_name = AXIS_NAMES[name]
    else:
        parts = name.split(".")
        try:
            _check_key(parts)
        except ConfigError:
            raise ConfigError(
                f"unknown study axis {name!r}; axes are {', '.join(SHORTCUTS)} or a dotted config key (e.g. train.lr)"
            ) from None
        if len(parts) < 2:
            raise ConfigError(f"study axis {name!r}: give a dotted config key (e.g. train.lr), not a whole section")
        key, axis_name = name, name
    if isinstance(spec, list):
        if key is None:
            raise ConfigError(f"study axis {name}: give a mapping label -> overrides (e.g. small: {{model.d_model: 32}})")
        if not spec:
            raise ConfigError(f"study axis {name} is empty; give at least one value")
        levels = [Level(_label(name, _fmt(v)), {key: v}) for v in spec]
    elif isinstance(spec, dict):
        if not spec:
            raise ConfigError(f"study axis {name} is empty; give at least one value")
        levels = []
        for label, value in spec.items():
            if isinstance(value, dict):
                over = {(k if "." in k or key is not None else f"model.{k}"): v for k, v in value.items()}
            elif key is not None:
                over = {key: value}
            else:
                raise ConfigError(f"study axis {name}.{label}: give a mapping of config keys (d_model: 32, num_layers: 2)")
            for k in over:
                try:
                    _check_key(k.split("."))
                except ConfigError as err:
                    raise ConfigError(f"study axis {name}.{label}: {err}") from None
            levels.append(Level(_label(name, str(label)), over))
    else:
        raise ConfigError(f"study axis {name}: give a list of values or a mapping label -> overrides")
    labels = [lv.label for lv in levels]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"study axis {name}: labels repeat ({', '.join(labels)}); give each level its own label")
    return Axis(axis_name, tuple(levels))


def _label(axis: str, label: str) -> str:
    if not _LABEL.fullmatch(label):
        raise ConfigError(f"study axis {axis}: label {label!r} must be letters, digits, _ . + - (it names run directories)")
    return label


def _fmt(value: Any) -> str:
    text = "-".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^\w.+-]", "_", text)


def _match(raw: Any, axes: list[Axis]) -> Match:
    if raw is None:
        return Match()
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list):
        raw = {k: True for k in raw}
    if not isinstance(raw, dict):
        raise ConfigError("study key match: give params, tokens, [params, tokens] or a mapping (params: LABEL, tokens: N)")
    for key in raw:
        if key not in (*MATCH_KINDS, "tolerance"):
            raise ConfigError(f"study key match.{key}: unknown; match takes params, tokens and tolerance")
    tol = raw.get("tolerance", TOLERANCE)
    if not isinstance(tol, int | float) or not 0 < tol < 1:
        raise ConfigError(f"study key match.tolerance={tol!r}: a fraction in (0, 1), e.g. 0.05")
    m = Match(tolerance=float(tol))
    variants = next((a for a in axes if a.name == "variant"), None)
    if "params" in raw and raw["params"] is not False:
        p = raw["params"]
        if variants is None:
            raise ConfigError("study key match: params matches the variants' sizes; the study has no variants axis")
        ref, target = None, None
        if isinstance(p, bool):
            ref = variants.levels[0].label
        elif isinstance(p, int):
            if p < 1:
                raise ConfigError(f"study key match.params={p}: a parameter count must be positive")
            target = p
        else:
            ref = str(p)
            labels = [lv.label for lv in variants.levels]
            if ref not in labels:
                raise ConfigError(f"study key match.params={ref!r}: not a label of the variants axis ({', '.join(labels)})")
        m = Match(True, ref, target, m.tokens, m.tokens_budget, m.tolerance)
    if "tokens" in raw and raw["tokens"] is not False:
        t = raw["tokens"]
        budget = None
        if isinstance(t, int) and not isinstance(t, bool):
            if t < 1:
                raise ConfigError(f"study key match.tokens={t}: a token budget must be positive")
            budget = t
        elif t not in (True, "auto"):
            raise ConfigError(f"study key match.tokens={t!r}: give a token count or auto (each group's reference point)")
        m = Match(m.params, m.params_reference, m.params_target, True, budget, m.tolerance)
    return m


# ------------------------------------------------------------------------------------------------
# Expansion
# ------------------------------------------------------------------------------------------------


def expand(study: Study) -> list[Point]:
    """The study's points (cartesian product of the axes, objectives dropped on non-text tasks).

    Each point's raw config is the base with its levels' overrides applied, named
    ``<study>-<labels>``; its configs (one per seed) come from :func:`t5lab.config.load_sweep`'s
    validation, so a bad point fails here, before anything runs.
    """
    from t5lab.tasks import get_task

    points: list[Point] = []
    seen: set[str] = set()
    for combo in itertools.product(*(a.levels for a in study.axes)) if study.axes else [()]:
        labels = {a.name: lv.label for a, lv in zip(study.axes, combo)}
        raw = copy.deepcopy(study.base)
        objective: Level | None = None
        for axis, lv in zip(study.axes, combo):
            if axis.name == "objective":
                objective = lv
                continue
            over = dict(lv.overrides)
            if axis.name == "task" and "data.task" in over:
                over.setdefault("data.options", {})  # another task's options do not carry over
            raw = apply_overrides(raw, [_override(k, v) for k, v in over.items()])
        data = raw.get("data") or {}
        try:
            task_kind = get_task(data.get("task", "reverse"), **dict(data.get("options") or {})).kind
        except (TypeError, ConfigError) as err:
            raise ConfigError(f"study point {_key(labels)}: {str(err).splitlines()[0]}") from None
        if objective is not None:
            if task_kind != "text":
                labels["objective"] = NO_OBJECTIVE
            else:
                raw = _apply_objective(raw, objective)
        point = Point(labels, raw)
        if point.key in seen:
            continue
        seen.add(point.key)
        point.raw["name"] = f"{study.name}-{point.key}" if point.key else study.name
        point.info["task_kind"] = task_kind
        points.append(point)
    for point in points:
        point.configs = configs_of(point, study.seed_values())
    return points


def _key(labels: dict[str, str]) -> str:
    return ",".join(f"{_short(a)}={v}" for a, v in labels.items())


def _apply_objective(raw: dict[str, Any], level: Level) -> dict[str, Any]:
    over = dict(level.overrides)
    if over.get("data.objective") == LM:
        from t5lab.variants import get_variant

        model = raw.get("model") or {}
        try:
            variant = get_variant(model.get("variant", "t5"))
        except ValueError as err:
            raise ConfigError(f"config key model.variant: {str(err).splitlines()[0]}") from None
        kind = variant.kind_of(dict(model.get("options") or {}))
        if kind == "causal_lm":  # full language modelling: every token is a target
            over.update({"data.objective": "causal_lm", "data.loss_on": "all"})
        else:  # prefix LM: a bidirectional (or encoded) prefix, the loss on the continuation
            over["data.objective"] = "prefix_lm"
    return apply_overrides(raw, [_override(k, v) for k, v in over.items()])


def configs_of(point: Point, seeds: list[int]) -> list[ExperimentConfig]:
    """One validated and resolved config per seed (``name`` gets the ``-seed=N`` suffix ``t5lab train`` gives)."""
    from t5lab.plan import resolve

    out = []
    for seed in seeds:
        raw = apply_overrides(point.raw, [f"train.seed={seed}"])
        try:
            cfg = validate(raw)
            resolve(cfg)  # the checks across sections (split sizes, variant x task x objective ...)
        except ConfigError as err:
            raise ConfigError(f"study point {point.key or point.raw['name']}: {err}") from None
        out.append(cfg.model_copy(update={"name": f"{cfg.name}-seed={seed}"}))
    return out


def set_keys(point: Point, values: dict[str, Any], seeds: list[int]) -> None:
    """Apply dotted-key values to a point (matching) and re-validate its configs."""
    point.raw = apply_overrides(point.raw, [_override(k, v) for k, v in values.items()])
    point.configs = configs_of(point, seeds)
