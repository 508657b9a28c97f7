"""Fair comparisons by construction: matched parameter counts, a common training-token budget.

**Parameters** are counted by building the point's model on PyTorch's ``meta`` device (shapes, no
memory, no initialisation work) with the vocabulary of the point's own tokenizer, and summing
``model.parameters()`` (tied weights once). A variant is matched to its comparison group's
reference point (same task, objective, size ...; the reference variant) in this order:

1. ``d_ff`` alone: the count is affine in ``d_ff`` at fixed width and depth, so two builds give the
   exact ``d_ff``; kept when ``d_ff / d_model`` stays within ``FF_RATIO`` (T5 uses 4).
2. otherwise depth: ``num_layers`` from 1 to ``3 x`` the configured, each with its solved ``d_ff``;
3. otherwise width too: ``d_model`` (multiples of ``num_heads``) from half to twice the configured.
   Within a stage the candidate closest to the configured shape (sum of absolute log ratios of
   ``num_layers``, ``d_model``, ``d_ff``) wins.

A match is kept when the counts agree within the tolerance (5%); no candidate is an error.

**Tokens**: a point's tokens per example are the non-pad tokens the model reads from one training
example: encoder input + decoder target for encoder-decoders (``input </s>`` and ``target </s>``),
the whole sequence ``input </s> target </s>`` for decoder-only models, so both count the same text
the same way. Tokens per step = ``batch_size x accumulate_grad_batches x`` the mean over the
training split; ``max_steps = round(budget / tokens per step)`` (at least 1).
"""

from __future__ import annotations

import math
from typing import Any

from t5lab.errors import ConfigError
from t5lab.study.spec import Match, Point, set_keys

FF_RATIO = (0.5, 8.0)  # allowed d_ff / d_model when only d_ff moves
DEPTH_FACTOR = 3
WIDTH_RANGE = (0.5, 2.0)


class _Cache:
    """Tasks, splits and tokenizers per data section (several variants share one task)."""

    def __init__(self) -> None:
        self.store: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def data(self, cfg: Any) -> tuple[Any, dict[str, list[Any]], Any]:
        import json

        key = json.dumps([cfg.data.model_dump(mode="json"), cfg.tokenizer.model_dump(mode="json")], sort_keys=True)
        if key not in self.store:
            from t5lab.tasks import build_splits, get_task
            from t5lab.train.run import build_tokenizer_for

            task = get_task(cfg.data.task, **dict(cfg.data.options))
            splits = build_splits(cfg.data)
            self.store[key] = (task, splits, build_tokenizer_for(cfg, task, splits))
        return self.store[key]


def count_parameters(cfg: Any, cache: _Cache | None = None, **model_updates: Any) -> int:
    """Parameters of the model ``cfg`` builds (``model_updates`` replace model keys), on ``meta``."""
    import json

    import torch

    from t5lab.variants import BuildInfo, get_variant

    cache = cache or _Cache()
    task, _, tokenizer = cache.data(cfg)
    model_cfg = cfg.model.model_copy(update=model_updates) if model_updates else cfg.model
    key = json.dumps([model_cfg.model_dump(mode="json"), len(tokenizer), cfg.data.max_length, cfg.data.task], sort_keys=True)
    if key in cache.counts:
        return cache.counts[key]
    info = BuildInfo.for_run(cfg, task, tokenizer)
    with torch.device("meta"):
        model = get_variant(model_cfg.variant).build(model_cfg, info)
    cache.counts[key] = sum(p.numel() for p in model.parameters())
    return cache.counts[key]


def _solve_ff(cfg: Any, target: int, cache: _Cache, d_model: int, layers: int) -> tuple[int, int] | None:
    """The integer ``d_ff`` whose count is closest to ``target`` at this width and depth, and that count."""
    shape = {"d_model": d_model, "num_layers": layers}
    lo, hi = max(1, d_model // 2), 2 * d_model
    p_lo = count_parameters(cfg, cache, d_ff=lo, **shape)
    p_hi = count_parameters(cfg, cache, d_ff=hi, **shape)
    per = (p_hi - p_lo) / (hi - lo)
    if per <= 0:
        return None
    d_ff = round(lo + (target - p_lo) / per)
    if not FF_RATIO[0] * d_model <= d_ff <= FF_RATIO[1] * d_model:
        return None
    return d_ff, round(p_lo + per * (d_ff - lo))


def match_params(cfg: Any, target: int, tolerance: float, cache: _Cache | None = None) -> dict[str, Any]:
    """Model keys (``model.d_ff`` [, ``model.num_layers``, ``model.d_model``]) giving ``cfg`` ~``target`` parameters.

    Raises:
        ConfigError: No width / depth in the search box comes within ``tolerance``.
    """
    cache = cache or _Cache()
    m = cfg.model
    first = _solve_ff(cfg, target, cache, m.d_model, m.num_layers)
    if first is not None and abs(first[1] - target) <= tolerance * target:
        return {"model.d_ff": first[0]}
    best: tuple[float, dict[str, Any]] | None = None
    step = m.num_heads
    widths = [w for w in range(step, int(WIDTH_RANGE[1] * m.d_model) + 1, step) if w >= WIDTH_RANGE[0] * m.d_model]
    # depth first (at the configured width), then width too: the first stage with a fit wins
    for stage in ([m.d_model], sorted(widths, key=lambda w: abs(math.log(w / m.d_model)))):
        for width in stage:
            for layers in range(1, DEPTH_FACTOR * m.num_layers + 1):
                found = _solve_ff(cfg, target, cache, width, layers)
                if found is None or abs(found[1] - target) > tolerance * target:
                    continue
                d_ff, _ = found
                distance = abs(math.log(layers / m.num_layers)) + abs(math.log(width / m.d_model)) + abs(math.log(d_ff / m.d_ff))
                if best is None or distance < best[0]:
                    best = (distance, {"model.d_ff": d_ff, "model.num_layers": layers, "model.d_model": width})
        if best is not None:
            break
    if best is None:
        have = count_parameters(cfg, cache)
        raise ConfigError(
            f"match: params: variant {m.variant} ({have:,} parameters as configured) cannot reach {target:,} "
            f"within {tolerance:.0%} (d_ff/d_model in {FF_RATIO}, up to {DEPTH_FACTOR}x layers, "
            f"{WIDTH_RANGE[0]}-{WIDTH_RANGE[1]}x width); change the reference size or match.tolerance"
        )
    return best[1]


def tokens_per_example(cfg: Any, cache: _Cache | None = None) -> float:
    """Mean non-pad tokens the model reads per training example (see the module docstring)."""
    from t5lab.formulation import Formulation

    cache = cache or _Cache()
    task, splits, tokenizer = cache.data(cfg)
    formulation = Formulation.from_config(cfg, tokenizer, task)
    examples = formulation.encode_all(splits["train"])
    if not examples:
        raise ConfigError(f"config key data.train: the training split of {cfg.name} is empty")
    if formulation.kind == "seq2seq":
        total = sum(len(e.input_ids) + len(e.labels) for e in examples)
    else:
        total = sum(len(e.input_ids) for e in examples)
    return total / len(examples)


def apply_matching(points: list[Point], match: Match, seeds: list[int]) -> None:
    """Set each point's matched sizes / ``max_steps`` and record the counts in ``point.info``.

    Raises:
        ConfigError: An impossible match (one line, before anything runs).
    """
    cache = _Cache()
    groups: dict[str, list[Point]] = {}
    for p in points:
        groups.setdefault(p.group, []).append(p)
    for p in points:
        p.info["params"] = count_parameters(p.configs[0], cache)
    if match.params:
        for group in groups.values():
            if match.params_target is not None:
                target, ref = match.params_target, None
            else:
                ref = next((p for p in group if p.labels.get("variant") == match.params_reference), None)
                if ref is None:
                    continue  # this group has no reference variant (a level excluded by the task kind)
                target = ref.info["params"]
            for p in group:
                p.info["params_configured"] = p.info["params"]
                if p is not ref:
                    found = match_params(p.configs[0], target, match.tolerance, cache)
                    set_keys(p, found, seeds)
                    p.info["matched"] = found
                    p.info["params"] = count_parameters(p.configs[0], cache)
                p.info["params_target"] = target
    for p in points:
        p.info["tokens_per_example"] = tokens_per_example(p.configs[0], cache)
        t = p.configs[0].train
        p.info["tokens_per_step"] = p.info["tokens_per_example"] * t.batch_size * t.accumulate_grad_batches
    if match.tokens:
        for group in groups.values():
            if match.tokens_budget is not None:
                budget = match.tokens_budget
            else:
                ref = next((p for p in group if p.labels.get("variant") == match.params_reference), group[0])
                steps = ref.configs[0].train.max_steps
                if steps is None:
                    raise ConfigError(f"match: tokens auto needs train.max_steps on the reference point {ref.key}; give one")
                budget = round(steps * ref.info["tokens_per_step"])
            for p in group:
                steps = max(1, round(budget / p.info["tokens_per_step"]))
                warm = p.configs[0].train.warmup_steps
                if warm >= steps:
                    raise ConfigError(
                        f"match: tokens: point {p.key} gets {steps} steps from {budget:,} tokens, not more than "
                        f"train.warmup_steps={warm}; raise the budget or lower warmup_steps"
                    )
                set_keys(p, {"train.max_steps": steps, "train.max_epochs": None}, seeds)
                p.info["token_budget"] = budget
    for p in points:
        p.info["max_steps"] = p.configs[0].train.max_steps
        if p.info["max_steps"] is not None:
            p.info["train_tokens"] = round(p.info["max_steps"] * p.info["tokens_per_step"])
