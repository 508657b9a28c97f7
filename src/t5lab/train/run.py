"""Runs: config -> task, tokenizer, formulation, data, model -> Lightning Trainer -> run directory.

Run directory (docs/developing.md)::

    runs/<name>/<timestamp>/
      config.yaml  metrics.csv  samples.txt  model/  checkpoints/{last,best}.ckpt  DONE

Everything that can fail on bad input (config, sizes, devices, loggers) is checked before the
directory is created. Checkpoints are written at the end of every training epoch; data order and
dropout are pure functions of (seed, epoch, batch), so ``resume(run_dir)`` after any crash ends
with the same weights as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from t5lab.config import ExperimentConfig, load_plans, read_yaml, save_config, validate
from t5lab.errors import ConfigError, T5LabError
from t5lab.train.timing import phase

DONE = "DONE"


def quickstart_path() -> Path:
    """Path of the built-in quickstart config (``t5lab train`` with no arguments)."""
    return Path(str(resources.files("t5lab") / "configs" / "quickstart.yaml"))


@dataclass
class RunResult:
    """What a finished (or skipped) run left behind."""

    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    stopped: dict[str, Any] | None = None  # train.stop_at reached: its metrics, step and time_s
    timing: dict[str, Any] = field(default_factory=dict)  # timing.json: wall_s and parts_s


# ------------------------------------------------------------------------------------------------
# Checks before any work
# ------------------------------------------------------------------------------------------------


def check_runtime(cfg: ExperimentConfig) -> None:
    """Raise ConfigError for settings this machine cannot run (devices, precision, strategies, loggers)."""
    import torch

    if cfg.train.stop_at and cfg.data.val == 0:
        raise ConfigError("config key train.stop_at needs validation metrics; give data.val > 0 or drop train.stop_at")
    t = cfg.trainer
    cuda = torch.cuda.is_available()
    if t.accelerator in ("gpu", "cuda") and not cuda:
        raise ConfigError(f"config key trainer.accelerator={t.accelerator}: no CUDA GPU on this machine; use trainer.accelerator=cpu")
    if t.accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("config key trainer.accelerator=mps: MPS is not available here; use trainer.accelerator=cpu")
    on_gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and cuda)
    p = cfg.train.precision
    if p == "bf16-mixed" and on_gpu and not torch.cuda.is_bf16_supported():
        raise ConfigError("config key train.precision=bf16-mixed: this GPU has no bfloat16; use train.precision=16-mixed or 32")
    if p == "16-mixed" and not on_gpu:
        raise ConfigError("config key train.precision=16-mixed needs a GPU; on CPU use train.precision=bf16-mixed or 32")
    if cfg.train.fused_optimizer is True:  # before the run dir exists: Lightning would fail at the first clip
        from t5lab.train.fast import resolve_fused, resolve_precision

        try:
            resolve_fused(True, cfg.train.optimizer, resolve_precision(p, t.accelerator), cfg.train.gradient_clip_val)
        except ValueError as err:
            raise ConfigError(f"config key {err}") from None
    if t.strategy == "fsdp" and not on_gpu:
        raise ConfigError("config key trainer.strategy=fsdp needs GPUs; on CPU use trainer.strategy=ddp")
    if t.strategy == "deepspeed":
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise ConfigError("config key trainer.strategy=deepspeed: the deepspeed package is not installed (pip install deepspeed)") from None
    if isinstance(t.devices, int) and t.devices < 1:
        raise ConfigError(f"config key trainer.devices={t.devices}: must be >= 1")
    if on_gpu and isinstance(t.devices, int) and t.devices > torch.cuda.device_count():
        raise ConfigError(f"config key trainer.devices={t.devices}: only {torch.cuda.device_count()} GPU(s) here")
    if cfg.log.tensorboard:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError("config key log.tensorboard=true needs the tensorboard package (pip install tensorboard)") from None
    if cfg.log.wandb:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("config key log.wandb=true needs the wandb package (pip install wandb)") from None


# ------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------


def _texts(records: list[Any]) -> list[str]:
    out = []
    for r in records:
        if hasattr(r, "text"):
            out.append(r.text)
        else:
            out += [r.input, r.target]
    return out


def build_tokenizer_for(cfg: ExperimentConfig, task: Any, splits: dict[str, list[Any]]) -> Any:
    """The tokenizer a config asks for (char alphabets come from the task, or from all split texts)."""
    from t5lab.tokenizers import build_tokenizer, load_tokenizer

    kind = cfg.tokenizer.kind
    if kind == "byte":
        return build_tokenizer("byte")
    if kind == "char":
        alphabet = task.alphabet()
        texts = None if alphabet else [t for split in splits.values() for t in _texts(split)]
        return build_tokenizer("char", texts=texts, alphabet=alphabet)
    if kind == "unigram":
        return build_tokenizer("unigram", texts=_texts(splits["train"]), vocab_size=cfg.tokenizer.vocab_size)
    if kind == "word":  # words from the training split only, so held-out text cannot leak into the vocabulary
        return build_tokenizer(
            "word",
            texts=_texts(splits["train"]),
            alphabet=task.alphabet(),
            vocab_size=cfg.tokenizer.vocab_size,
            min_frequency=cfg.tokenizer.min_frequency,
            add_dummy_prefix=cfg.tokenizer.add_dummy_prefix,
        )
    return load_tokenizer(kind)


def _bucketing(cfg: ExperimentConfig, examples: list[Any]) -> bool:
    """data.bucketing resolved (auto: when the training examples' lengths vary; t5lab.train.fast)."""
    from t5lab.train.fast import example_length, resolve_bucketing

    return resolve_bucketing(cfg.data.bucketing, [example_length(e) for e in examples])


def _curriculum(cfg: ExperimentConfig, examples: list[Any]) -> tuple[int, int] | None:
    """data.curriculum as (start, batches under it) for the datamodule; its start checked against
    the training inputs (t5lab.train.curriculum), and said in one line."""
    c = cfg.data.curriculum
    if c is None:
        return None
    lengths = [len(e.prompt) for e in examples]
    shortest, longest = min(lengths), max(lengths)
    if c.start < shortest:
        raise ConfigError(
            f"config key data.curriculum.start={c.start}: every training input is longer (the shortest has "
            f"{shortest} tokens, eos included); set start >= {shortest}"
        )
    first = sum(n <= c.start for n in lengths)
    print(
        f"data.curriculum: step 0 draws from the {first} of {len(lengths)} training inputs with at most {c.start} "
        f"tokens; the limit grows linearly to all ({longest} tokens) at step {c.steps}"
    )
    return c.start, c.steps * max(1, cfg.train.accumulate_grad_batches)


def _packing(cfg: ExperimentConfig, kind: str) -> bool:
    """data.packing resolved (auto: t5lab.train.packing.resolve_packing)."""
    from t5lab.train.packing import resolve_packing

    return resolve_packing(cfg.data.packing, kind, cfg.data.pack_length)


@dataclass
class Pieces:
    """Everything a run needs, built (and checked) before the run directory exists."""

    cfg: ExperimentConfig
    task: Any
    splits: dict[str, list[Any]]
    tokenizer: Any
    formulation: Any
    datamodule: Any
    model: Any


def build_pieces(cfg: ExperimentConfig, tokenizer: Any = None) -> Pieces:
    """Task, splits, tokenizer, formulation, datamodule and a seeded fresh (or loaded) model."""
    import lightning.pytorch as pl
    import torch

    from t5lab.formulation import Formulation
    from t5lab.plan import resolve
    from t5lab.tasks import build_splits
    from t5lab.train.data import T5LabDataModule

    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
        os.environ["OMP_NUM_THREADS"] = str(cfg.trainer.num_threads)  # spawned DDP workers read it
    plan = resolve(cfg)  # variant, task and formulation kind, decided once (t5lab.plan)
    task, d = plan.task, cfg.data
    with phase("data"):  # generating the splits and tokenising them (t5lab.train.timing)
        splits = build_splits(task, d.train, d.val, d.test, d.seed)
        if not splits["train"]:
            raise ConfigError("config key data.train: the training split is empty; give a positive size")
        if tokenizer is None:
            tokenizer = build_tokenizer_for(cfg, task, splits)
        formulation = Formulation.from_plan(plan, tokenizer)
        dm = T5LabDataModule(
            formulation,
            splits,
            batch_size=cfg.train.batch_size,
            eval_batch_size=cfg.train.eval_batch_size,
            seed=cfg.train.seed,
            num_workers=cfg.train.num_workers,
            packing=_packing(cfg, formulation.kind),
            pack_length=cfg.data.pack_length,
        )
        dm.bucketing = _bucketing(cfg, dm.examples["train"])
        dm.curriculum = _curriculum(cfg, dm.examples["train"])
    from t5lab.variants import BuildInfo

    info = BuildInfo.for_run(cfg, task, tokenizer)
    check_init_from(cfg, len(tokenizer))
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    try:
        with phase("model"):
            model = plan.variant.build(cfg.model, info)
    except (ValueError, TypeError) as err:
        if isinstance(err, T5LabError):
            raise
        raise ConfigError(f"model section: {str(err).splitlines()[0]}") from err
    check_position_table(cfg, model, formulation.kind, dm.examples)
    return Pieces(cfg, task, splits, tokenizer, formulation, dm, model)


def position_rows(config: Any) -> int | None:
    """Rows of a model's learned position table (None: it has none, e.g. T5's relative bias)."""
    if getattr(config, "model_type", None) == "gpt2":
        return config.n_positions
    if getattr(config, "model_type", "").startswith("t5_pseudo_dec"):
        return None if config.position_blind else config.max_position_embeddings
    if getattr(config, "position_encoding", None) == "absolute":
        return config.max_position_embeddings
    return None


def positions_needed(kind: str, examples: dict[str, list[Any]], max_new_tokens: int | None, restart: bool) -> int:
    """Table rows a run needs: the most positions one sequence takes in training or in greedy decoding.

    Greedy decoding writes up to ``max_new_tokens`` (default: the longest target), feeding back all
    but the last. Seq2seq counts each side alone; a decoder-only sequence is its prompt and then
    its target (or what decoding feeds back), unless its target positions restart (``restart``,
    ``digits``: the target counts 1, 2, ... after the prompt's 0 .. P-1). Packed rows count each
    segment alone, so they need no more.
    """
    rows = [e for split in examples.values() for e in split]
    if not rows or kind == "classification":
        return max((len(e.input_ids) for e in rows), default=0)
    prompt = max(len(e.prompt) for e in rows)
    target = max(len(e.target) for e in rows)
    new = max_new_tokens or target
    if kind == "seq2seq":
        return max(prompt, target, new)
    if restart:
        return max(prompt, target + 1, new)
    return max(max(len(e.input_ids) for e in rows), prompt + new - 1)


def check_position_table(cfg: ExperimentConfig, model: Any, kind: str, examples: dict[str, list[Any]]) -> None:
    """A learned position table too small for this run's sequences is a config error before any run dir."""
    rows = position_rows(model.config)
    if rows is None:
        return
    restart = getattr(model.config, "target_positions", "continue") != "continue"
    needed = positions_needed(kind, examples, cfg.train.max_new_tokens, restart)
    if needed > rows:
        raise ConfigError(
            f"config key model.options.max_position_embeddings={rows}: the model's position table has {rows} rows "
            f"but this run's sequences take up to {needed} positions (data.max_length {cfg.data.max_length}, in "
            f"training or decoding); set it to at least {needed}, leave it out (it then covers the run) or lower "
            "data.max_length"
        )


def check_init_from(cfg: ExperimentConfig, vocab_size: int) -> None:
    """``model.init_from``: its weights pass the run's manifest, its vocabulary fits the tokenizer.

    A vocabulary of another size is an error unless ``model.resize_embeddings: true`` (then the
    resize is said in one line): silently dropping or adding embedding rows changes the model.
    """
    from t5lab import rundir

    src = cfg.model.init_from
    if src is None:
        return
    rundir.verify_model_dir(src, verify_hashes=rundir.verification_on())
    try:
        theirs = json.loads((Path(src) / "config.json").read_text()).get("vocab_size")
    except (OSError, ValueError):
        raise ConfigError(f"config key model.init_from={src}: config.json is not readable JSON; give a save_pretrained directory") from None
    if theirs is None or int(theirs) == vocab_size:
        return
    if not cfg.model.resize_embeddings:
        raise ConfigError(
            f"config key model.init_from={src}: the model has a vocabulary of {theirs} tokens, the tokenizer "
            f"{vocab_size}; use the model's tokenizer (tokenizer: {src}) or set model.resize_embeddings=true to resize"
        )
    print(f"model.init_from: embeddings resized from {theirs} to {vocab_size} tokens (model.resize_embeddings=true)")


def report_data(cfg: ExperimentConfig, pieces: Pieces) -> None:
    """Say, once and before training, what the data section changes about the data.

    - how many examples ``data.max_length`` truncates (a ConfigError with ``data.truncate: false``);
    - classification labels that are not 0..n-1: the model gets a class per id up to the largest,
      so the ids that never occur waste outputs (a warning with the mapping to contiguous ids).
    """
    limit = cfg.data.max_length - 1  # tokens per side before the eos
    f, tok = pieces.formulation, pieces.tokenizer
    cut: dict[str, tuple[int, int]] = {}
    longest = 0
    for split, records in pieces.splits.items():
        if not records:
            continue
        if f.text_objective is not None:
            sides = [[r.target] for r in records]
            allowed = 2 * limit if f.text_objective == "prefix_lm" else limit
        elif f.kind == "classification":
            sides, allowed = [[r.text] for r in records], limit
        else:
            sides, allowed = [[r.input, r.target] for r in records], limit
        flat = [t for texts in sides for t in texts]
        lengths = [len(ids) for ids in tok(flat, add_special_tokens=False)["input_ids"]]
        per = len(sides[0])
        over = [max(lengths[i * per : (i + 1) * per]) for i in range(len(sides))]
        n = sum(x > allowed for x in over)
        longest = max(longest, max(over))
        if n:
            cut[split] = (n, len(records))
    if cut:
        counts = ", ".join(f"{n} of {total} {split}" for split, (n, total) in cut.items())
        what = f"data.max_length={cfg.data.max_length} cuts {counts} examples (longest: {longest} tokens + eos)"
        if not cfg.data.truncate:
            raise ConfigError(f"config key {what}; raise data.max_length to {longest + 1} or set data.truncate=true")
        print(f"{what}; raise data.max_length to {longest + 1} to keep them whole (data.truncate=false makes this an error)")
    if f.kind == "classification" and getattr(pieces.task, "problem_type", None) == "single_label_classification":
        seen = sorted({r.label for records in pieces.splits.values() for r in records if isinstance(r.label, int)})
        if seen and seen != list(range(len(seen))):
            mapping = ", ".join(f"{a}->{b}" for b, a in enumerate(seen))
            num = getattr(pieces.task, "num_labels", seen[-1] + 1)
            print(
                f"warning: classification labels {seen} are not contiguous: the model gets {num} outputs and "
                f"{num - len(seen)} never occur; map them to 0..{len(seen) - 1} ({mapping}) to train {len(seen)} classes"
            )


# ------------------------------------------------------------------------------------------------
# Run directories
# ------------------------------------------------------------------------------------------------


def new_run_dir(out: str | os.PathLike, name: str) -> Path:
    """``out/name/<timestamp>`` (``-1``, ``-2`` ... appended if two runs start in the same second)."""
    base = Path(out) / name
    base.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = base / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise T5LabError(f"cannot create a run directory under {base}")


def find_runs(out: str | os.PathLike, cfg: ExperimentConfig) -> list[Path]:
    """Run directories under ``out/<cfg.name>`` whose config.yaml equals ``cfg``, newest first."""
    base = Path(out) / cfg.name
    if not base.is_dir():
        return []
    want = cfg.to_dict()
    found = []
    for d in sorted(base.iterdir(), reverse=True):
        path = d / "config.yaml"
        if not path.is_file():
            continue
        try:
            if validate(read_yaml(path)).to_dict() == want:
                found.append(d)
        except T5LabError:
            continue
    return found


def choose_checkpoint(run_dir: Path, verify: bool | None = None) -> tuple[Path | None, int]:
    """The checkpoint to resume from: ``last.ckpt``, or the newest valid one when it is damaged.

    A checkpoint is valid when it loads with ``weights_only=True`` and its sha256 is one the run's
    manifest accepts (``verify=False`` / ``T5LAB_NO_VERIFY=1``: hashes not checked). A fallback is
    said in one line.

    Returns:
        ``(path, global_step)``; ``(None, 0)`` when the run has no checkpoint yet.

    Raises:
        RunDirError: There are checkpoints and none of them is valid.
    """
    from t5lab import rundir

    verify = rundir.verification_on(verify)
    folder = run_dir / "checkpoints"
    found = [folder / n for n in ("last.ckpt", "best.ckpt") if (folder / n).is_file()]
    bad: list[str] = []
    for path in found:  # last.ckpt is written after best.ckpt at every save: the newest first
        try:
            state = rundir.load_checkpoint(path, verify_hash=verify)
        except rundir.RunDirError as err:
            bad.append(str(err))
            continue
        step = int(state.get("global_step", 0))
        if bad:
            # kept for inspection under another name, out of the manifest; the resumed run writes a new one
            damaged = found[0].with_name(found[0].name + ".damaged")
            os.replace(found[0], damaged)
            rundir.settle(run_dir, {}, drop=[rundir.relative(run_dir, found[0])])
            why = bad[0].split(": ", 1)[-1].split(";")[0]
            print(f"{found[0].name} is damaged ({why}; moved to {damaged.name}); resuming from {path} (step {step}) instead")
        return path, step
    if bad:
        names = " and ".join(p.name for p in found)
        raise rundir.RunDirError(f"{folder}: no valid checkpoint to resume from ({names} damaged; first: {bad[0]})")
    return None, 0


def _loggers(cfg: ExperimentConfig, run_dir: Path) -> list[Any]:
    from t5lab.train.callbacks import RunCSVLogger

    loggers: list[Any] = [RunCSVLogger(run_dir)]
    if cfg.log.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
    if cfg.log.wandb:
        from lightning.pytorch.loggers import WandbLogger

        offline = not os.environ.get("WANDB_API_KEY")  # no key: log offline, sync later with `wandb sync`
        loggers.append(WandbLogger(project=cfg.log.wandb_project, name=cfg.name, save_dir=str(run_dir), offline=offline))
    return loggers


def make_trainer(cfg: ExperimentConfig, run_dir: Path, progress: bool = True) -> Any:
    """The Lightning ``Trainer`` of a run: checkpoints, loggers, strategy from the config."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from t5lab.train.callbacks import AtomicCheckpointIO, RunGuard, StopAt, TimingCallback
    from t5lab.train.fast import resolve_precision

    t, hw = cfg.train, cfg.trainer
    has_val = cfg.data.val != 0
    callbacks: list[Any] = [
        # saved at every training-epoch end (exact resume, see module docstring): last.ckpt always,
        # best.ckpt by validation loss
        ModelCheckpoint(
            dirpath=str(run_dir / "checkpoints"),
            filename="best",
            monitor="val_loss" if has_val else None,
            mode="min",
            save_top_k=1,
            save_last=True,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )
    ]
    if t.early_stop is not None:
        e = t.early_stop
        callbacks.append(EarlyStopping(monitor=e.monitor, patience=e.patience, mode=e.mode, min_delta=e.min_delta, check_finite=True))
    if t.stop_at and has_val:
        callbacks.append(StopAt(t.stop_at))
    callbacks.append(TimingCallback())
    if progress and t.progress_bar:
        from t5lab.train.progress import StepProgressBar

        callbacks.append(StepProgressBar())  # steps out of max_steps, not Lightning's "Epoch 9/-2"
    loggers = _loggers(cfg, run_dir)
    callbacks.append(RunGuard(loggers[0], t.divergence, run_dir))
    strategy: Any = hw.strategy
    if strategy == "ddp" and _resolves_to_cpu(hw.accelerator):
        # `t5lab train` runs sweeps in one process; the default popen launcher would re-execute the
        # whole command line in every worker, so CPU DDP starts its workers with spawn instead.
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(start_method="spawn", process_group_backend="gloo")
    val_kwargs: dict[str, Any] = {}
    if isinstance(t.val_check_interval, int):
        val_kwargs = {"val_check_interval": t.val_check_interval, "check_val_every_n_epoch": None}
    else:
        val_kwargs = {"val_check_interval": t.val_check_interval, "check_val_every_n_epoch": t.check_val_every_n_epoch}
    if not has_val:
        val_kwargs = {"limit_val_batches": 0}
    _quiet_lightning()
    return pl.Trainer(
        default_root_dir=str(run_dir),
        accelerator=hw.accelerator,
        devices=hw.devices,
        num_nodes=hw.num_nodes,
        strategy=strategy,
        precision=resolve_precision(t.precision, hw.accelerator),  # "auto": t5lab.train.fast
        max_steps=t.max_steps if t.max_steps is not None else -1,
        max_epochs=t.max_epochs if t.max_epochs is not None else -1,
        max_time=_dt.timedelta(seconds=t.max_time_s) if t.max_time_s is not None else None,  # Lightning's Timer
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=hw.deterministic,
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(run_dir)],
        enable_progress_bar=progress and t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # EpochSampler shards by rank itself (seeded, resumable)
        **val_kwargs,
    )


def _resolves_to_cpu(accelerator: str) -> bool:
    """Whether Lightning runs ``accelerator`` on the CPU (``auto`` does where there is no GPU)."""
    import torch

    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def _quiet_lightning() -> None:
    """Keep the console to t5lab's own lines: drop Lightning's start-up banners ("GPU available",
    cloud-logging tips), a deprecation warning Lightning 2.6 raises from its own code on torch
    2.13, and warnings about states t5lab sets up on purpose. ``T5LAB_VERBOSE=1`` keeps them."""
    if os.environ.get("T5LAB_VERBOSE"):
        return
    import logging
    import warnings

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # T5LabModule.on_before_batch_transfer (logits_to_keep read on the host) with a datamodule that has
    # no such hook: Lightning warns that the module's is used, which is the intent
    warnings.filterwarnings("ignore", message=r".*overridden `on_before_batch_transfer` in `LightningModule`.*")
    # best.ckpt monitors val_loss and is saved at epoch ends: an epoch that ends before the first
    # validation (val_check_interval longer than an epoch) has none yet, which is expected, and the
    # next epoch end after a validation writes it; last.ckpt is saved either way
    warnings.filterwarnings("ignore", message=r".*could not find the monitored key in the returned metrics.*")


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------


def run_experiment(
    cfg: ExperimentConfig,
    out: str | os.PathLike = "runs",
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    startup_s: float = 0.0,
) -> RunResult:
    """Train one config into a new run directory (or continue ``run_dir`` from its last checkpoint).

    Args:
        cfg: The validated experiment config.
        out: Parent of ``<name>/<timestamp>`` run directories.
        run_dir: An existing run directory to resume (its ``checkpoints/last.ckpt`` if present).
        progress: Show Lightning's progress bar.
        startup_s: Seconds spent before this call that belong to the run (``t5lab train``: since
            the process started), charged to ``startup`` in ``timing.json``.

    Returns:
        The run directory, its final val/test metrics, the stop_at result and the time breakdown.
    """
    from t5lab import rundir
    from t5lab.train.timing import Stopwatch, set_current

    watch = Stopwatch()
    watch.start(startup_s)
    set_current(watch)  # parts are charged by phase() calls in the data, module, callbacks and here
    locks: list[rundir.RunLock] = []  # one per run directory, held until the run ends (or fails)
    try:
        with phase("startup"):
            _import_heavy()
        check_runtime(cfg)
        if run_dir is not None:
            run_dir = Path(run_dir)
            locks.append(rundir.RunLock(run_dir, "train").acquire())
            _clean_stale(run_dir)
        return _run_locked(cfg, out, run_dir, progress, locks)
    finally:
        set_current(None)
        for lock in locks:
            lock.release()


def _import_heavy() -> None:
    """Import what every run needs (torch, Lightning, transformers) under the ``startup`` part."""
    import lightning.pytorch  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import t5lab.train.module  # noqa: F401


def _clean_stale(run_dir: Path) -> None:
    from t5lab import rundir

    stale = rundir.clean_stale(run_dir)
    if stale:
        names = ", ".join(rundir.relative(run_dir, p) for p in stale[:4]) + (" ..." if len(stale) > 4 else "")
        print(f"removed {len(stale)} leftover(s) of an interrupted write in {run_dir}: {names}")


def _run_locked(cfg: ExperimentConfig, out: str | os.PathLike, run_dir: Path | None, progress: bool, locks: list[Any]) -> RunResult:
    from t5lab import rundir
    from t5lab.train.callbacks import RunCSVLogger
    from t5lab.train.io import atomic_save_pretrained, atomic_write_text
    from t5lab.train.module import T5LabModule

    tokenizer = None
    if run_dir is not None and (run_dir / "model" / "tokenizer_config.json").is_file():
        from t5lab.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(run_dir / "model")  # the exact tokenizer of the first attempt
    pieces = build_pieces(cfg, tokenizer)
    report_data(cfg, pieces)
    if run_dir is None:
        run_dir = new_run_dir(out, cfg.name)
        locks.append(rundir.RunLock(run_dir, "train").acquire())
        save_config(cfg, run_dir / "config.yaml")
        atomic_save_pretrained(None, pieces.tokenizer, run_dir / "model")
    ckpt, start = choose_checkpoint(run_dir)
    # what the checkpoint has not seen is logged again: cut metrics.csv and samples.txt back to it
    RunCSVLogger(run_dir).truncate_after(start)
    rundir.truncate_samples(run_dir / "samples.txt", start)
    if ckpt is not None:
        print(f"resuming {run_dir} from {ckpt} (step {start})")
    module = T5LabModule(
        pieces.model,
        cfg,
        pieces.formulation.kind,
        problem_type=pieces.formulation.problem_type,
        tokenizer=pieces.tokenizer,
        run_dir=str(run_dir),
    )
    trainer = make_trainer(cfg, run_dir, progress=progress)
    from t5lab.train.fast import maybe_compile

    ckpt_path = str(ckpt) if ckpt is not None else None
    trainer.fit(maybe_compile(module, cfg.train.compile, cfg.trainer.accelerator), datamodule=pieces.datamodule, ckpt_path=ckpt_path)
    epochs = trainer.fit_loop.epoch_progress
    if ckpt is not None and trainer.global_step == start and epochs.current.processed > epochs.current.completed:
        # restored from an epoch-end checkpoint with nothing left to train (killed during the final
        # save): Lightning never closes that epoch, so the test block would name the epoch before
        epochs.increment_completed()
    # with spawned DDP workers this process's trainer never stepped: the checkpoint knows the step
    step = trainer.global_step or _checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    if cfg.data.val != 0 and not _validated_at(run_dir, step):
        trainer.validate(module, datamodule=pieces.datamodule, verbose=False)  # final weights, when fit ended between validations
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    if cfg.data.val != 0 and not metrics:
        # resumed after fit had finished (killed during the final save): the last validation is in metrics.csv
        metrics = _val_metrics_at(run_dir, step)
    if cfg.data.test != 0:
        for row in trainer.test(module, datamodule=pieces.datamodule, verbose=False):
            metrics.update({k: float(v) for k, v in row.items() if k != "step"})
    stopped = _stop_result(trainer)
    timing: dict[str, Any] = {}
    if trainer.global_rank == 0:
        with phase("checkpointing"):
            atomic_save_pretrained(pieces.model, pieces.tokenizer, run_dir / "model", run_dir=run_dir)
        timing = _finish_timing(run_dir, stopped)
        summary: dict[str, Any] = {"finished": _dt.datetime.now().isoformat(timespec="seconds"), "step": step, "metrics": metrics}
        if stopped is not None:
            summary["stopped_at"] = stopped
        summary["wall_s"] = timing.get("wall_s")
        atomic_write_text(run_dir / DONE, json.dumps(summary, indent=1) + "\n", point="done")
    return RunResult(run_dir, metrics, stopped=stopped, timing=timing)


def _stop_result(trainer: Any) -> dict[str, Any] | None:
    """The ``train.stop_at`` result of the run (None: no target, or not reached)."""
    from t5lab.train.callbacks import StopAt

    for cb in trainer.callbacks:
        if isinstance(cb, StopAt) and cb.result is not None:
            print(f"stopped at the target: {cb.describe()}")
            return dict(cb.result)
    return None


def _finish_timing(run_dir: Path, stopped: dict[str, Any] | None) -> dict[str, Any]:
    """Stop the run's stopwatch, print where the time went and write ``timing.json``."""
    from t5lab.train.io import atomic_write_text
    from t5lab.train.timing import current

    watch = current()
    if watch is None:
        return {}
    watch.stop()
    report = watch.report()
    if stopped is not None:
        report["stopped_at"] = stopped
    print(watch.table())
    atomic_write_text(run_dir / "timing.json", json.dumps(report, indent=1) + "\n", point="timing")
    return report


def _val_metrics_at(run_dir: Path, step: int) -> dict[str, float]:
    """The ``val_*`` values metrics.csv holds for ``step``."""
    from t5lab.train.callbacks import read_metrics_rows

    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    out: dict[str, float] = {}
    for _, row in read_metrics_rows(path, strict=False)[1]:
        if row.get("step") == str(step):
            out.update({k: float(v) for k, v in row.items() if k.startswith("val_")})
    return out


def _checkpoint_step(ckpt: Path) -> int:
    from t5lab import rundir

    return int(rundir.load_checkpoint(ckpt, verify_hash=False).get("global_step", 0)) if ckpt.is_file() else 0


def _validated_at(run_dir: Path, step: int) -> bool:
    """Whether metrics.csv has validation metrics logged at ``step``."""
    import csv

    path = run_dir / "metrics.csv"
    if not path.is_file():
        return False
    with open(path, newline="") as fh:
        return any(r.get("step") == str(step) and r.get("val_loss") for r in csv.DictReader(fh))


def resume(run_dir: str | os.PathLike, progress: bool = True, since: float | None = None) -> RunResult:
    """Continue a run from ``RUN_DIR/checkpoints/last.ckpt`` with its own config.yaml.

    ``since``: as for :func:`train` (the time before the call counted as start-up).

    Raises:
        T5LabError: Not a run directory, or the run already finished (has DONE).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise T5LabError(f"--resume {run_dir}: not a run directory (no config.yaml); give runs/<name>/<timestamp>")
    if (run_dir / DONE).exists():
        raise T5LabError(f"--resume {run_dir}: this run already finished (DONE exists); start a new run instead")
    cfg = validate(read_yaml(run_dir / "config.yaml"))
    import time

    startup = max(0.0, time.time() - since) if since is not None else 0.0
    return run_experiment(cfg, run_dir=run_dir, progress=progress, startup_s=startup)


def train(
    config: str | os.PathLike | dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | os.PathLike = "runs",
    progress: bool = True,
    since: float | None = None,
) -> list[RunResult]:
    """Train a config, or every point of a sweep (any list value is a sweep axis), one after another.

    Sweep points whose run already finished with the same resolved config (DONE) are skipped;
    an unfinished one with a checkpoint is resumed.

    Args:
        config: YAML path or dict; None runs the built-in quickstart.
        overrides: ``dotted.key=value`` strings applied before the sweep is expanded.
        out: Directory that holds ``<name>/<timestamp>`` run directories.
        progress: Show Lightning's progress bar.
        since: ``time.time()`` the work began (``t5lab train``: the process start): the time from
            then to this call is the first run's ``startup`` (``timing.json``). None: from this call.

    Returns:
        One :class:`RunResult` per sweep point.
    """
    import time

    began = since if since is not None else time.time()  # start-up of the next run counts from here
    plans = load_plans(quickstart_path() if config is None else config, overrides)  # every point checked first
    points = [(plan.cfg, suffix) for plan, suffix in plans]
    for cfg, _ in points:
        check_runtime(cfg)
    results = []
    sweep = len(points) > 1 or bool(points[0][1])
    for i, (cfg, suffix) in enumerate(points):
        if suffix:
            cfg = cfg.model_copy(update={"name": f"{cfg.name}-{suffix}"})
        if sweep:
            print(f"sweep point {i + 1}/{len(points)}: {suffix}")
            previous = find_runs(out, cfg)
            done = [d for d in previous if (d / DONE).exists()]
            if done:
                print(f"skipping: already finished in {done[0]}")
                results.append(RunResult(done[0], json.loads((done[0] / DONE).read_text()).get("metrics", {}), skipped=True))
                continue
            started = [d for d in previous if (d / "checkpoints" / "last.ckpt").exists()]
            if started:
                results.append(run_experiment(cfg, out, run_dir=started[0], progress=progress, startup_s=time.time() - began))
                began = time.time()
                print(f"run directory: {results[-1].run_dir}")
                continue
        # loading and checking the configs (and, from the CLI, the process start) is the run's start-up
        results.append(run_experiment(cfg, out, progress=progress, startup_s=time.time() - began))
        began = time.time()
        print(f"run directory: {results[-1].run_dir}")
    return results
