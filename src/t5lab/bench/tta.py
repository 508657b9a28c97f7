"""``t5lab bench time_to_accuracy``: the harness against a plain PyTorch loop, to a target, per recipe.

For each original task (the seed harness's definitions, ``data.options: {preset: seed}``) and each
variant, a *cell* takes the task's recipe (``configs/recipes/<task>-<variant>.yaml``, else
``configs/recipes/<task>.yaml`` with ``model.variant=<variant>``), runs it through the harness
(:func:`t5lab.train.run.train`, what ``t5lab train`` runs) and, in the same process with the same
thread count, through :func:`plain_run` (which side goes first alternates from cell to cell): a
loop written without Lightning (batches collated in-process, whatever ``train.num_workers``) that
builds the same
model (same seed, same init), feeds the same tokenised batches in the same order (t5lab's samplers
and collate), steps the same optimizer, schedule and gradient clipping, and validates the same
examples at the same steps with the same greedy decoding (transformers' ``generate``, KV cache).
Both stop at the recipe's ``train.stop_at`` or at the wall-time cap (``train.max_time_s``: for the
harness Lightning's ``Trainer(max_time=...)``, for the plain loop the same rule: counted from the
start of training, validation included, checked after every step, a validation at the step it
fires). tests/bench/test_time_to_accuracy.py checks that both sides see the same training losses.

Times to target are seconds from the side's own start, data and model build included. Training
samples/s is samples over the seconds of the training steps proper (forward, backward, clipping,
optimizer and schedule; for the harness ``timing.json``'s ``train_steps``), batch loading and
validation excluded on both sides.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from t5lab.bench.core import Comparison
from t5lab.errors import ConfigError, T5LabError

CASE = "time_to_accuracy"
TASKS = ("copy", "sort", "histogram", "doublehistogram", "numbersort", "long_addition")
VARIANTS = ("t5", "pseudo_dec", "decoder_only", "gpt2")
DEFAULT_TIME_CAP_S = 150.0
WARMUP_STEPS = 20


class MissingRecipe(T5LabError):
    """No recipe file for a task (neither ``<task>-<variant>.yaml`` nor ``<task>.yaml``)."""


# ------------------------------------------------------------------------------------------------
# Recipes
# ------------------------------------------------------------------------------------------------


def recipe_dir() -> Path:
    """The recipes shipped as package data (``t5lab/configs/recipes``)."""
    return Path(str(resources.files("t5lab") / "configs" / "recipes"))


def find_recipe(task: str, variant: str, folder: Path | None = None) -> Path:
    """``<task>-<variant>.yaml`` if it exists, else ``<task>.yaml``.

    Raises:
        MissingRecipe: Neither file exists.
    """
    folder = recipe_dir() if folder is None else Path(folder)
    for name in (f"{task}-{variant}.yaml", f"{task}.yaml"):
        if (folder / name).is_file():
            return folder / name
    raise MissingRecipe(f"no recipe for task {task!r}: neither {folder / f'{task}-{variant}.yaml'} nor {folder / f'{task}.yaml'} exists")


def recipe_config(task: str, variant: str, folder: Path | None = None) -> tuple[dict[str, Any], Path]:
    """The raw config of one cell and the recipe it comes from.

    A ``<task>.yaml`` recipe gets ``model.variant=<variant>``; its ``model.options`` are kept only
    when they are options of that variant (e.g. ``prefix_lm`` belongs to decoder_only, not gpt2).

    Raises:
        MissingRecipe: No recipe file.
        ConfigError: The recipe is for another task.
    """
    from t5lab.config import DataConfig, read_yaml
    from t5lab.tasks import get_task
    from t5lab.variants import get_variant

    path = find_recipe(task, variant, folder)
    raw = read_yaml(path)
    data = raw.get("data") or {}
    # the task the recipe reports on: its own, or a mixture's evaluated entry (t5lab.tasks.mixture)
    named = get_task(data.get("task", DataConfig.model_fields["task"].default), **dict(data.get("options") or {})).evaluated_task.name
    if named != task:
        raise ConfigError(f"recipe {path}: data.task={data.get('task')!r} evaluates {named!r}, expected {task!r}; fix the recipe")
    model = dict(raw.get("model") or {})
    if model.get("variant", "t5") != variant:
        model["variant"] = variant
        try:
            get_variant(variant).check_options(dict(model.get("options") or {}))
        except ConfigError:
            model["options"] = {}  # the recipe's options are another variant's
    raw["model"] = model
    raw["name"] = f"tta-{task}-{variant}"
    return raw, path


def cell_overrides(time_cap_s: float, overrides: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The overrides every cell runs with (the cap, no progress bar), then the caller's."""
    return [f"train.max_time_s={float(time_cap_s)}", "train.progress_bar=false", *overrides]


# ------------------------------------------------------------------------------------------------
# One side's result
# ------------------------------------------------------------------------------------------------


@dataclass
class Side:
    """What one side (harness or plain loop) of a cell did."""

    reached: bool = False
    time_to_target_s: float | None = None  # from the side's start, build included; None: not reached
    steps: int = 0  # optimizer steps taken (at the stop)
    best_val_exact_match: float | None = None
    samples: int = 0  # training samples consumed
    step_seconds: float = 0.0  # seconds in training steps proper
    wall_s: float = 0.0  # side start to its end (the harness: test and final save included)
    test_exact_match: float | None = None  # the harness only
    losses: list[float] = field(default_factory=list)  # plain loop: the training loss of every step
    vals: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # plain loop: (step, val metrics)

    @property
    def samples_per_s(self) -> float | None:
        return self.samples / self.step_seconds if self.step_seconds > 0 else None


# ------------------------------------------------------------------------------------------------
# The harness side
# ------------------------------------------------------------------------------------------------


def harness_run(raw: dict[str, Any], overrides: list[str], out: str | os.PathLike) -> Side:
    """Train the cell's config with the harness (:func:`t5lab.train.run.train`) into ``out``."""
    from t5lab.config import load_config
    from t5lab.train.run import train
    from t5lab.train.timing import process_start

    cfg = load_config(raw, overrides)
    start_wall, start = time.time(), time.perf_counter()
    [result] = train(raw, overrides, out=out, progress=False)
    side = Side(wall_s=time.perf_counter() - start)
    done = json.loads((result.run_dir / "DONE").read_text())
    side.steps = int(done.get("step", 0))
    if result.stopped is not None:
        side.reached = True
        side.steps = int(result.stopped["step"])
        # StopAt's time_s counts from the process start (t5lab.train.timing.process_start)
        side.time_to_target_s = process_start() + float(result.stopped["time_s"]) - start_wall
    ems = [float(r["val_exact_match"]) for r in _metric_rows(result.run_dir) if r.get("val_exact_match")]
    side.best_val_exact_match = max(ems) if ems else None
    side.test_exact_match = result.metrics.get("test_exact_match")
    side.step_seconds = float(result.timing.get("parts_s", {}).get("train_steps", 0.0))
    side.samples = _samples_in_steps(cfg, side.steps)
    return side


def _metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _samples_in_steps(cfg: Any, steps: int) -> int:
    """Training samples in the first ``steps`` batches of the run's order (sizes only, no collate)."""
    sizes = []
    data = build_data(cfg)
    for _, _, idx in _batch_indices(cfg, data):
        if len(sizes) == steps:
            break
        sizes.append(len(idx))
    return sum(sizes)


# ------------------------------------------------------------------------------------------------
# The plain side: data, model, batches, validation, loop
# ------------------------------------------------------------------------------------------------


@dataclass
class Data:
    task: Any
    tokenizer: Any
    formulation: Any
    train: list[Any]
    val: list[Any]
    bucketing: bool
    packing: bool


def build_data(cfg: Any) -> Data:
    """Splits, tokenizer, formulation and encoded examples, as :func:`t5lab.train.run.build_pieces` makes them."""
    from t5lab.formulation import Formulation
    from t5lab.plan import resolve
    from t5lab.tasks import build_splits
    from t5lab.train.fast import example_length, resolve_bucketing
    from t5lab.train.packing import resolve_packing
    from t5lab.train.run import build_tokenizer_for

    plan = resolve(cfg)
    d = cfg.data
    splits = build_splits(plan.task, d.train, d.val, d.test, d.seed)
    tokenizer = build_tokenizer_for(cfg, plan.task, splits)
    form = Formulation.from_plan(plan, tokenizer)
    train = form.encode_all(splits["train"])
    bucketing = resolve_bucketing(d.bucketing, [example_length(e) for e in train])
    return Data(plan.task, tokenizer, form, train, form.encode_all(splits["val"]), bucketing,
                resolve_packing(d.packing, form.kind, d.pack_length))


def build_model(cfg: Any, data: Data) -> Any:
    """A fresh model seeded as the harness seeds it (``pl.seed_everything(train.seed)``: random,
    numpy and torch) right before :meth:`t5lab.variants.Variant.build`."""
    import numpy as np
    import torch

    from t5lab.variants import BuildInfo, get_variant

    seed = cfg.train.seed
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return get_variant(cfg.model.variant).build(cfg.model, BuildInfo.for_run(cfg, data.task, data.tokenizer))


def _sampler(cfg: Any, data: Data) -> Any:
    """The harness's training batch sampler for one rank (t5lab.train.data, t5lab.train.fast,
    t5lab.train.curriculum): index lists, with the epoch set by ``set_epoch``."""
    from torch.utils.data import BatchSampler

    from t5lab.train.data import EpochSampler
    from t5lab.train.fast import BucketBatchSampler, example_length

    t, c = cfg.train, cfg.data.curriculum
    if data.bucketing:
        batches = BucketBatchSampler([example_length(e) for e in data.train], t.batch_size, t.seed, 0, 1)
    else:  # the DataLoader's own batching of an EpochSampler (drop_last=False)
        batches = BatchSampler(EpochSampler(len(data.train), t.seed, shuffle=True), t.batch_size, drop_last=False)
    if c is None:
        return batches
    from t5lab.train.curriculum import CurriculumBatchSampler

    # check_plain refuses gradient accumulation, so batches under the curriculum = its steps
    return CurriculumBatchSampler([len(e.prompt) for e in data.train], batches, t.batch_size, c.start, c.steps, t.seed)


def _batch_indices(cfg: Any, data: Data):
    """``(epoch, batch_idx, example indices)`` of every training batch, epoch after epoch."""
    sampler = _sampler(cfg, data)
    epoch = 0
    while True:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        else:
            sampler.sampler.set_epoch(epoch)
        for i, idx in enumerate(sampler):
            yield epoch, i, idx
        epoch += 1


def _device(cfg: Any) -> str:
    import torch

    acc = cfg.trainer.accelerator
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "mps" if acc == "mps" else "cpu"


def check_plain(cfg: Any) -> None:
    """ConfigError for settings the plain reference loop does not reproduce."""
    t, hw = cfg.train, cfg.trainer
    refuse = {
        "train.accumulate_grad_batches": t.accumulate_grad_batches != 1,
        "train.schedule=plateau": t.schedule == "plateau",
        "train.early_stop": t.early_stop is not None,
        "trainer.devices": hw.devices not in (1, "1", "auto"),
        "trainer.num_nodes": hw.num_nodes != 1,
    }
    bad = [k for k, v in refuse.items() if v]
    if bad:
        raise ConfigError(f"config key {bad[0]}: the plain reference loop of bench {CASE} runs one device, no "
                          "accumulation, plateau schedule or early stopping; change it in the recipe or an override")


def make_optimizer(cfg: Any, model: Any, device: str) -> tuple[Any, Any]:
    """The optimizer and per-step scheduler ``T5LabModule.configure_optimizers`` builds (None: no scheduler)."""
    import torch
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    from t5lab.train.fast import adamw_kwargs, resolve_precision

    t = cfg.train
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        opt = Adafactor(groups, lr=t.lr, scale_parameter=False, relative_step=False, warmup_init=False)
    else:
        precision = resolve_precision(t.precision, cfg.trainer.accelerator)
        opt = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), **adamw_kwargs(t.fused_optimizer, precision, t.gradient_clip_val))
    total = t.max_steps if t.max_steps is not None else -1
    if t.schedule == "cyclic":
        return opt, torch.optim.lr_scheduler.CyclicLR(opt, base_lr=t.lr / 10, max_lr=t.lr, step_size_up=t.cyclic_steps,
                                                       cycle_momentum=False)
    if total < 0 and t.schedule in ("linear", "cosine"):
        raise ConfigError(f"config key train.schedule={t.schedule}: the plain reference loop needs train.max_steps for it")
    if t.schedule == "linear":
        return opt, get_linear_schedule_with_warmup(opt, t.warmup_steps, total)
    if t.schedule == "cosine":
        return opt, get_cosine_schedule_with_warmup(opt, t.warmup_steps, total)
    if t.warmup_steps:
        return opt, get_constant_schedule_with_warmup(opt, t.warmup_steps)
    return opt, None


def _to(batch: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def validate_plain(model: Any, cfg: Any, data: Data, device: str) -> dict[str, float]:
    """The harness's validation metrics (``T5LabModule._eval_step`` / ``_finish_eval``): token-weighted
    loss and token accuracy over the whole split, exact match and decoded token accuracy of the
    greedy decodings of its first ``train.val_examples`` examples, in ``train.eval_batch_size``
    batches; values as float32, as Lightning stores them."""
    import torch

    from t5lab.formulation import decoding_matches, token_loss
    from t5lab.train.data import EvalCollator
    from t5lab.train.fast import bf16_autocast, resolve_precision
    from t5lab.variants import get_variant

    form, tok, t = data.formulation, data.tokenizer, cfg.train
    collate = EvalCollator(form)
    size = t.eval_batch_size or t.batch_size
    limit = t.val_examples
    new_tokens = get_variant(cfg.model.variant).new_tokens
    loss_sum = n = correct = exact = count = hits = ref_tokens = 0.0
    model.eval()
    with torch.inference_mode(), bf16_autocast(resolve_precision(t.precision, cfg.trainer.accelerator), device):
        for start in range(0, len(data.val), size):
            items = [(i, data.val[i]) for i in range(start, min(start + size, len(data.val)))]
            b = collate(items)
            inputs = _to(b["batch"], device)
            ls, nn, cc = token_loss(form.kind, model(**inputs).logits, inputs["labels"])
            loss_sum, n, correct = loss_sum + float(ls), n + float(nn), correct + float(cc)
            keep = b["index"] < limit if limit is not None else torch.ones_like(b["index"], dtype=torch.bool)
            if not bool(keep.any()):
                continue
            target = b["target"][keep]
            prompts = _to({k: v[keep] for k, v in b["prompts"].items()}, device)
            out = model.generate(**prompts, max_new_tokens=t.max_new_tokens or target.shape[1], do_sample=False,
                                 num_beams=1, use_cache=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            pred = new_tokens(out, prompts["input_ids"].shape[1])
            e, h, r = decoding_matches(pred.tolist(), target.tolist(), tok.eos_token_id, form.echo_input)
            exact, hits, ref_tokens, count = exact + e, hits + h, ref_tokens + r, count + float(target.shape[0])
    model.train()
    f32 = lambda x: float(torch.tensor(x, dtype=torch.float32))  # noqa: E731
    if n == 0:
        return {}
    return {"val_loss": f32(loss_sum / n), "val_ppl": f32(math.exp(min(loss_sum / n, 88.0))),
            "val_token_acc": f32(correct / n), "val_exact_match": f32(exact / max(count, 1.0)),
            "val_decoded_token_acc": f32(hits / max(ref_tokens, 1.0))}


def _val_rule(cfg: Any, batches_per_epoch: int):
    """Whether Lightning validates after a step (``_should_check_val_fx`` for this config):
    ``(total_batch_idx, epoch, batch_idx) -> bool``."""
    t = cfg.train
    if isinstance(t.val_check_interval, int):
        every = t.val_check_interval
        return lambda total, epoch, i: (total + 1) % every == 0
    frac = 1.0 if t.val_check_interval is None else t.val_check_interval
    every = max(1, int(batches_per_epoch * frac))
    n_epoch = t.check_val_every_n_epoch or 1
    return lambda total, epoch, i: (epoch + 1) % n_epoch == 0 and (i + 1) % every == 0


def plain_run(cfg: Any, max_steps: int | None = None, validate: bool = True) -> Side:
    """The plain PyTorch reference: build, train, validate, stop at ``train.stop_at`` or the cap.

    Args:
        cfg: The cell's validated config (the same one the harness runs).
        max_steps: Stop after this many steps (default: ``train.max_steps``; tests use fewer).
        validate: Validate at the harness's interval (tests of the losses alone turn it off).
    """
    import torch

    from t5lab.train.callbacks import reached, stop_targets
    from t5lab.train.data import ExampleDataset, TrainCollator
    from t5lab.train.fast import bf16_autocast, resolve_compile, resolve_precision

    start = time.perf_counter()
    check_plain(cfg)
    t = cfg.train
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)  # as build_pieces does
    data = build_data(cfg)
    device = _device(cfg)
    model = build_model(cfg, data).to(device).train()
    if resolve_compile(t.compile, cfg.trainer.accelerator):
        model.compile()  # as t5lab.train.fast.maybe_compile
    precision = resolve_precision(t.precision, cfg.trainer.accelerator)
    if precision == "16-mixed":
        raise ConfigError("config key train.precision=16-mixed: the plain reference loop runs 32 or bf16-mixed; set train.precision")
    opt, sched = make_optimizer(cfg, model, device)
    collate = TrainCollator(data.formulation, data.packing, cfg.data.pack_length)
    dataset = ExampleDataset(data.train)
    limit = t.max_steps if max_steps is None else max_steps
    targets = stop_targets(t.stop_at) if t.stop_at and validate else []
    batches_per_epoch = len(_sampler(cfg, data))
    should_val = _val_rule(cfg, batches_per_epoch)
    side = Side()
    train_start = time.perf_counter()
    last_val = -1
    for epoch, i, idx in _batch_indices(cfg, data):
        if (limit is not None and side.steps >= limit) or (t.max_epochs is not None and epoch >= t.max_epochs):
            break
        batch = _to(collate([dataset[j] for j in idx]), device)
        step_start = time.perf_counter()
        # the harness seeds dropout per step from (seed, epoch, batch, rank): T5LabModule.on_train_batch_start
        torch.default_generator.manual_seed(hash((t.seed, epoch, i, 0)) % (2**63))
        with bf16_autocast(precision, device):
            if "segment_ids" in batch:
                from t5lab.train.packing import packed_forward

                loss = packed_forward(model, batch).loss
            else:
                loss = model(**batch).loss
        loss.backward()
        if t.gradient_clip_val:  # over the optimizer's parameters in its order, as Lightning's clip_grad_by_norm
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], t.gradient_clip_val)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
        side.losses.append(float(loss.detach()))
        side.step_seconds += time.perf_counter() - step_start
        side.steps += 1
        side.samples += len(idx)
        total = side.steps - 1
        # Lightning's Timer: checked after every step, from the start of training, validation included
        time_up = t.max_time_s is not None and time.perf_counter() - train_start >= t.max_time_s
        if validate and data.val and (time_up or should_val(total, epoch, i)):
            metrics = validate_plain(model, cfg, data, device)
            last_val = side.steps
            _best(side, metrics)
            side.vals.append((side.steps, metrics))
            if targets and reached(targets, metrics):
                side.reached, side.time_to_target_s = True, time.perf_counter() - start
                break
        if time_up:
            break
    if validate and data.val and last_val != side.steps:
        metrics = validate_plain(model, cfg, data, device)  # final weights, as run_experiment validates them
        _best(side, metrics)
        side.vals.append((side.steps, metrics))
    side.wall_s = time.perf_counter() - start
    return side


def _best(side: Side, metrics: dict[str, float]) -> None:
    em = metrics.get("val_exact_match")
    if em is not None:
        side.best_val_exact_match = em if side.best_val_exact_match is None else max(em, side.best_val_exact_match)


# ------------------------------------------------------------------------------------------------
# The case
# ------------------------------------------------------------------------------------------------


def _names(value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if isinstance(value, str):
        value = value.split(",")
    return tuple(v.strip() for v in value if v.strip())


def check_choices(tasks: Any = None, variants: Any = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tasks and variants of a run (names, lists or comma-separated strings), checked.

    Raises:
        T5LabError: A task that is not one of the original tasks, or a variant that does not generate.
    """
    from t5lab.variants import get_variant

    tasks, variants = _names(tasks, TASKS), _names(variants, VARIANTS)
    for task in tasks:
        if task not in TASKS:
            raise T5LabError(f"--tasks {task}: not an original task; choose from {','.join(TASKS)}")
    for name in variants:
        try:
            ok = get_variant(name).generates
        except (ConfigError, KeyError, ValueError):
            ok = False
        if not ok:
            raise T5LabError(f"--variants {name}: give a registered text-generating variant, e.g. {','.join(VARIANTS)}")
    return tasks, variants


def warm_up_overrides(overrides: list[str] | tuple[str, ...], steps: int) -> list[str]:
    """A cell's overrides made into a warm-up's: ``steps`` steps, no target or cap, tiny eval sets."""
    # no LR warm-up: a recipe's own (often more steps than these) would be refused as >= max_steps
    return [*overrides, f"train.max_steps={steps}", "train.warmup_steps=0", "train.stop_at=null",
            "train.max_time_s=null", "data.val=8", "data.test=8", "train.val_examples=8",
            "train.eval_batch_size=8"]


def warm_up(raw: dict[str, Any], overrides: list[str], out: str | os.PathLike, steps: int = WARMUP_STEPS) -> None:
    """A few untimed steps of both sides on a cell's config, before the first timed cell.

    The first training of a process pays one-time costs (kernel and allocator set-up, lazy imports on
    the first backward and optimizer step); the warm-up keeps them out of the first cell's timed steps.
    It does not explain t5's slower first cell (docs/benchmarks.md, measured with and without it). The
    warm-up's eval sets are small and its results are discarded.
    """
    from t5lab.config import load_config

    small = warm_up_overrides(overrides, steps)
    harness_run(raw, small, out)
    plain_run(load_config(raw, small), max_steps=steps, validate=False)


def time_to_accuracy(tasks: Any = None, variants: Any = None, time_cap_s: float = DEFAULT_TIME_CAP_S,
                     overrides: tuple[str, ...] | list[str] = (), repeats: int = 1,
                     recipes: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
                     warmup_steps: int = WARMUP_STEPS) -> list[Comparison]:
    """One row per task x variant: harness vs plain loop, time to the recipe's ``train.stop_at``.

    Args:
        tasks: Original tasks (default: all six).
        variants: Variants (default: t5, pseudo_dec, decoder_only, gpt2).
        time_cap_s: Wall-time cap on each side's training (``train.max_time_s``).
        overrides: ``dotted.key=value`` applied to every cell's recipe (after the cap).
        repeats: Accepted for the bench's uniform interface; each cell runs once.
        recipes: Folder of the recipes (default: the package's ``configs/recipes``).
        out: Where the harness's run directories go (default: a temporary folder, removed).
        warmup_steps: Untimed steps of both sides before the first cell (:func:`warm_up`); 0: none.

    Returns:
        :class:`Comparison` rows; ``extra`` holds both sides (:class:`Side`) and the recipe.
        A cell with no recipe is a row with metric ``skipped``. The ratio is harness / plain
        time to target when both reach it, harness / plain training samples/s when neither does.
    """
    from t5lab.config import load_config
    from t5lab.train.run import check_runtime

    if time_cap_s is None or not time_cap_s > 0:
        raise T5LabError(f"--time-cap {time_cap_s}: give a positive number of seconds")
    tasks, variants = check_choices(tasks, variants)
    folder = Path(recipes) if recipes is not None else None
    rows: list[Comparison] = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(out) if out is not None else Path(tmp)
        warmed = False
        for n, (task, variant) in enumerate((t, v) for t in tasks for v in variants):
            try:
                raw, path = recipe_config(task, variant, folder)
            except MissingRecipe as err:
                rows.append(Comparison(CASE, f"{task}/{variant}", "plain_loop", "skipped", None, None, "record",
                                       extra={"task": task, "variant": variant, "skipped": str(err)}))
                print(f"{CASE} {task}/{variant}: skipped: {err}")
                continue
            ov = cell_overrides(time_cap_s, overrides)
            cfg = load_config(raw, ov)
            check_runtime(cfg)  # what the harness would refuse, refused before either side runs
            check_plain(cfg)
            if warmup_steps and not warmed:
                print(f"{CASE}: warming up on {task}/{variant} ({warmup_steps} untimed steps per side)")
                warm_up(raw, ov, Path(tmp) / "warm-up", warmup_steps)
                warmed = True
            print(f"{CASE} {task}/{variant}: {path.name}, cap {time_cap_s:g} s")
            # alternate which side runs first, so that neither always runs on a warmer machine
            sides: dict[str, Side] = {}
            order = ("harness", "plain") if n % 2 == 0 else ("plain", "harness")
            for name in order:
                sides[name] = harness_run(raw, ov, runs) if name == "harness" else plain_run(cfg)
            rows.append(_row(task, variant, path, sides["harness"], sides["plain"], time_cap_s, order))
    return rows


def _row(task: str, variant: str, recipe: Path, h: Side, p: Side, cap: float, order: tuple[str, ...]) -> Comparison:
    if h.reached and p.reached:
        metric, cv, rv, hib = "s to target", h.time_to_target_s, p.time_to_target_s, False
    elif not h.reached and not p.reached:
        metric, cv, rv, hib = "train samples/s", h.samples_per_s, p.samples_per_s, True
    else:  # one side reached it within the cap: no ratio, the table says which
        metric, cv, rv, hib = "s to target", h.time_to_target_s, None, False
    if cv is None:
        rv = None
    extra = {"task": task, "variant": variant, "recipe": recipe.name, "time_cap_s": cap, "first": order[0],
             "harness": _side_dict(h), "plain": _side_dict(p)}
    return Comparison(CASE, f"{task}/{variant}", "plain_loop", metric, cv, rv, "record", higher_is_better=hib, extra=extra)


def _side_dict(s: Side) -> dict[str, Any]:
    d = asdict(s)
    d.pop("losses")
    d.pop("vals")
    d["samples_per_s"] = s.samples_per_s
    return d


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------

HEAD = ("task", "variant", "recipe", "reached (h/p)", "s to target harness", "s to target plain", "steps (h/p)",
        "best val EM (h/p)", "test EM harness", "train samples/s harness", "train samples/s plain", "ratio h/p")


# the console table's headers, short enough for an 80-column terminal (the Markdown keeps HEAD)
SHORT_HEAD = ("task", "variant", "recipe", "reached h/p", "s h", "s p", "steps h/p", "best EM h/p", "test EM h",
              "smp/s h", "smp/s p", "ratio h/p")


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else f"{x:{fmt}}"


def _yn(x: bool) -> str:
    return "yes" if x else "no"


def table_rows(rows: list[Comparison]) -> list[list[str]]:
    """The cells of the time-to-accuracy table, one list per task x variant (other cases' rows left out)."""
    out = []
    for r in rows:
        if r.case != CASE:
            continue
        e = r.extra
        if "skipped" in e:
            out.append([e["task"], e["variant"], "skipped: no recipe", *["-"] * (len(HEAD) - 3)])  # listed, not run
            continue
        h, p = e["harness"], e["plain"]
        ratio = r.raw_ratio
        ratio_s = "-" if ratio is None else f"{ratio:.2f}x" + (" (samples/s)" if r.metric == "train samples/s" else "")
        out.append([
            e["task"], e["variant"], e["recipe"], f"{_yn(h['reached'])}/{_yn(p['reached'])}",
            _f(h["time_to_target_s"], ".1f"), _f(p["time_to_target_s"], ".1f"), f"{h['steps']}/{p['steps']}",
            f"{_f(h['best_val_exact_match'], '.3f')}/{_f(p['best_val_exact_match'], '.3f')}",
            _f(h["test_exact_match"], ".3f"), _f(h["samples_per_s"], ".0f"), _f(p["samples_per_s"], ".0f"), ratio_s,
        ])
    return out


def markdown(rows: list[Comparison], command: str | None = None) -> str:
    """The table as Markdown, headed by the command that made it (``t5lab bench`` passes its own
    command line; None: no such line) and the machine it ran on."""
    import torch

    cap = next((r.extra.get("time_cap_s") for r in rows if r.case == CASE and "time_cap_s" in r.extra), None)
    lines = []
    if command:
        lines.append(f"Made by `{command}`")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    lines.append(f"({os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
                 f"load {_f(load, '.1f')} at the end; cap {_f(cap, 'g')} s per side; h = harness, p = plain loop)")
    lines.append("")
    lines.append("| " + " | ".join(HEAD) + " |")
    lines.append("|" + "---|" * len(HEAD))
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(lines)


def rich_table(rows: list[Comparison]):
    from rich.table import Table

    table = Table(title=f"t5lab bench {CASE} (h = harness, p = plain loop; s: to target; smp/s: training samples/s)")
    for col in SHORT_HEAD:
        table.add_column(col, overflow="fold")
    for cells in table_rows(rows):
        table.add_row(*cells)
    return table
