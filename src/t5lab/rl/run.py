"""``t5lab ppo``: a YAML config -> policy, reference, prompts, reward -> PPO steps -> run directory.

Run directory (the layout of ``t5lab train``, docs/developing.md)::

    runs/<name>/<timestamp>/
      config.yaml    the resolved PPO config (load_ppo_config reads it back)
      metrics.csv    one row per PPO step: reward mean/std, KL, beta, entropy, clip fraction, ...
      samples.txt    prompt / response / score of a few rollouts every ``samples_every`` steps
      model/         the policy in HF format with its value head (AutoModelForSeq2SeqLM /
                     AutoModelForCausalLM after ``import t5lab``) and the tokenizer
      checkpoints/last/   model/ + trainer_state.pt (optimizer, KL controller, RNG, step)
      DONE           written last

``run_ppo(..., resume=RUN_DIR)`` continues from ``checkpoints/last``; on CPU the resumed run ends
with the same weights and metrics as an uninterrupted one.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from t5lab import rundir
from t5lab.errors import ConfigError, T5LabError
from t5lab.fileio import atomic_savefig
from t5lab.rl.ppo import PPOConfig

DONE = "DONE"
_FLOAT = re.compile(r"[-+]?\d*\.?\d+[eE][-+]?\d+")


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicySection(_Section):
    """Where the policy starts: a model dir, a run dir or ``runs/<name>`` (newest finished run)."""

    init: str
    # frozen reference for the KL penalty; default: the policy's starting weights
    ref: str | None = None


class PromptsSection(_Section):
    """Prompts (and targets, for the exact-match rewards): a t5lab task or a file."""

    task: str | None = None  # a seq2seq task name, e.g. copy / reverse (its records' inputs)
    options: dict[str, Any] = {}  # options of the task
    file: str | None = None  # .txt (one prompt per line) or .tsv (prompt<TAB>target)
    n: int = 512  # prompts drawn from the task
    seed: int = 0
    max_length: int = 32  # prompt tokens, eos included

    @field_validator("n", "max_length")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v


class RewardSection(_Section):
    """The reward: a built-in name or an import path, with options for a factory."""

    fn: str
    options: dict[str, Any] = {}


class PPORunConfig(_Section):
    """A PPO run: every setting, validated and frozen."""

    name: str = "ppo"
    policy: PolicySection
    prompts: PromptsSection
    reward: RewardSection
    ppo: dict[str, Any] = {}  # PPOConfig fields (see t5lab.rl.ppo.PPOConfig)
    steps: int = 20  # PPO steps (one rollout of ppo.batch_size prompts each)
    save_every: int = 10  # checkpoint interval in steps (and at the end)
    samples_every: int = 10  # samples.txt interval in steps
    num_samples: int = 3  # rollouts written to samples.txt each time
    num_threads: int = 1  # torch intra-op threads (tiny models gain nothing from more)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.=,+-]+", v):
            raise ValueError(f"must be a plain directory name (letters, digits, _ . = , + -), got {v!r}")
        return v

    @field_validator("steps", "save_every", "samples_every", "num_threads")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("ppo")
    @classmethod
    def _ppo(cls, v: dict[str, Any]) -> dict[str, Any]:
        ppo_config(v)  # raises a one-line ValueError naming the key
        return v

    @property
    def ppo_config(self) -> PPOConfig:
        return ppo_config(self.ppo)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        data["ppo"] = asdict(self.ppo_config)  # resolved: every PPO default written out
        return yaml.safe_dump(data, sort_keys=False)


def ppo_config(data: dict[str, Any]) -> PPOConfig:
    """``PPOConfig`` from a dict, type-checked by pydantic (ValueError with the key on failure)."""
    from pydantic import TypeAdapter

    known = set(PPOConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown key ppo.{unknown[0]}; keys of ppo: {', '.join(PPOConfig.__dataclass_fields__)}")
    try:
        return TypeAdapter(PPOConfig).validate_python(data)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        raise ValueError(f"ppo.{loc}: {msg}" if loc else msg) from None


def _fix_floats(x: Any) -> Any:
    # YAML 1.1 (pyyaml) reads `1e-3` (no dot) as a string; researchers mean a float
    if isinstance(x, dict):
        return {k: _fix_floats(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_fix_floats(v) for v in x]
    return float(x) if isinstance(x, str) and _FLOAT.fullmatch(x) else x


def _one_line(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return f"unknown config key {loc!r}; see docs/rl.md for the keys of a PPO config"
    if e["type"] == "missing":
        return f"config key {loc} is missing; add it to the YAML or pass {loc}=..."
    if msg.startswith(("unknown key ppo.", "ppo.")):
        return f"config key {msg}"
    got = e.get("input")
    tail = f" (got {got!r})" if e["type"] != "value_error" and not isinstance(got, dict) else ""
    return f"config key {loc}: {msg}{tail}"


def load_ppo_config(
    path_or_dict: str | os.PathLike | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> PPORunConfig:
    """Loads a PPO config from YAML (or a dict) with ``dotted.key=value`` overrides.

    Raises:
        ConfigError: One line naming the bad key: unknown key, wrong type, bad value.
    """
    from t5lab.config import parse_override, read_yaml

    raw = read_yaml(path_or_dict)
    if isinstance(path_or_dict, str | os.PathLike):
        raw.setdefault("name", Path(path_or_dict).stem)
    for item in overrides:
        parts, value = parse_override(item)
        node = raw
        for p in parts[:-1]:
            child = node.get(p)
            if not isinstance(child, dict):
                if child is not None:
                    raise ConfigError(f"override {item!r}: {p} is not a section")
                child = node[p] = {}
            node = child
        node[parts[-1]] = value
    try:
        return PPORunConfig.model_validate(_fix_floats(raw))
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None


# ------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------

_VALUE_HEAD_CLASSES = {
    "t5": "T5HeadWithValueModel",
    "t5_with_value_head": "T5HeadWithValueModel",
    "t5_pseudo_dec": "T5PseudoDecWithValueHead",
    "t5_pseudo_dec_with_value_head": "T5PseudoDecWithValueHead",
    "t5_decoder_only": "T5DecoderOnlyWithValueHead",
    "t5_decoder_only_with_value_head": "T5DecoderOnlyWithValueHead",
}


def load_policy(path: str | os.PathLike) -> Any:
    """The value-head model of a saved LM (its head is new) or of a saved value-head model (loaded).

    Raises:
        T5LabError: When the directory holds a variant without a value-head model.
    """
    import transformers

    import t5lab  # noqa: F401  (registers the variants)
    from t5lab.models import value_head
    from t5lab.rl.rewards import resolve_model_dir

    directory = resolve_model_dir(path)
    model_type = transformers.AutoConfig.from_pretrained(directory).model_type
    cls_name = _VALUE_HEAD_CLASSES.get(model_type)
    if cls_name is None:
        raise T5LabError(
            f"{directory} holds a {model_type!r} model; PPO needs a generator: t5, pseudo_dec or decoder_only"
        )
    transformers.logging.set_verbosity_error()  # the LOAD REPORT of a fresh value head is expected
    return getattr(value_head, cls_name).from_pretrained(directory).eval()


def load_prompts(section: PromptsSection) -> tuple[list[str], list[str] | None]:
    """Prompt texts and (when known) their targets."""
    if (section.task is None) == (section.file is None):
        raise ConfigError("give exactly one of prompts.task (a seq2seq task) or prompts.file (.txt or .tsv)")
    if section.file is not None:
        path = Path(section.file)
        if not path.is_file():
            raise ConfigError(f"prompts.file={path}: no such file; give a .txt (one prompt a line) or .tsv file")
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise ConfigError(f"prompts.file={path} holds no prompts")
        if path.suffix == ".tsv":
            rows = [line.split("\t") for line in lines]
            bad = next((i for i, r in enumerate(rows) if len(r) != 2), None)
            if bad is not None:
                raise ConfigError(f"prompts.file={path} line {bad + 1}: expected prompt<TAB>target")
            return [r[0] for r in rows], [r[1] for r in rows]
        return lines, None
    from t5lab.tasks import get_task

    task = get_task(section.task, **section.options)
    if getattr(task, "kind", None) != "seq2seq":
        raise ConfigError(f"prompts.task={section.task} is a {task.kind} task; PPO prompts need a seq2seq task")
    records = task.generate(section.n, seed=section.seed)
    return [r.input for r in records], [r.target for r in records]


def encode_prompts(tokenizer: Any, texts: list[str], max_length: int) -> tuple[Any, Any]:
    """Right-padded ``(input_ids, attention_mask)`` as ``t5lab train`` encodes inputs: ``text </s>``."""
    import torch

    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 1
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][: max_length - 1] + [eos] for t in texts]
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    return input_ids, mask


def decode_responses(tokenizer: Any, response_ids: Any, response_mask: Any) -> list[str]:
    """Response texts: the real tokens, EOS and padding dropped."""
    eos = tokenizer.eos_token_id
    out = []
    for ids, mask in zip(response_ids.tolist(), response_mask.tolist()):
        kept = [t for t, m in zip(ids, mask) if m and t != eos]
        out.append(tokenizer.decode(kept, skip_special_tokens=True))
    return out


# ------------------------------------------------------------------------------------------------
# Run
# ------------------------------------------------------------------------------------------------


def run_ppo(
    config: str | os.PathLike | dict[str, Any] | PPORunConfig | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | os.PathLike = "runs",
    resume: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Runs PPO from a config (or resumes ``resume``'s run directory) and returns the run directory.

    Everything that can fail on bad input (config, paths, reward) fails before the run directory
    is created.
    """
    import torch
    from transformers import AutoTokenizer

    from t5lab.rl.rewards import load_reward, resolve_model_dir
    from t5lab.train.run import new_run_dir

    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise T5LabError(f"--resume {run_dir}: no config.yaml there; give a PPO run directory")
        cfg = load_ppo_config(run_dir / "config.yaml")
    else:
        if config is None:
            raise ConfigError("give a PPO config file, e.g. t5lab ppo configs/ppo_positive.yaml")
        cfg = config if isinstance(config, PPORunConfig) else load_ppo_config(config, overrides)
    ppo_cfg = cfg.ppo_config
    torch.set_num_threads(cfg.num_threads)

    # -- pieces, all checked before the run directory exists
    policy_dir = resolve_model_dir(cfg.policy.init)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    prompts, targets = load_prompts(cfg.prompts)
    if len(prompts) < ppo_cfg.batch_size:
        raise ConfigError(f"only {len(prompts)} prompts for ppo.batch_size={ppo_cfg.batch_size}; add prompts or lower it")
    reward = load_reward(cfg.reward.fn, cfg.reward.options)
    torch.manual_seed(ppo_cfg.seed)  # the fresh value head's initialisation
    policy = load_policy(policy_dir)
    ref = load_policy(cfg.policy.ref) if cfg.policy.ref else copy.deepcopy(policy)

    if resume is None:
        run_dir = new_run_dir(out, cfg.name)
    # one process per run dir (t5lab.rundir.RunLock); released when the run ends or fails
    with rundir.RunLock(run_dir, "ppo"):
        return _run_ppo_locked(cfg, run_dir, resume, progress, policy, ref, tokenizer, prompts, targets, reward)


def _run_ppo_locked(cfg: PPORunConfig, run_dir: Path, resume: Any, progress: bool, policy: Any, ref: Any,
                    tokenizer: Any, prompts: list[str], targets: list[str] | None, reward: Any) -> Path:
    import torch

    from t5lab.rl.ppo import PPOTrainer
    from t5lab.rl.rewards import compute_scores
    from t5lab.train.callbacks import RunCSVLogger
    from t5lab.train.io import atomic_append_text, atomic_save_pretrained, atomic_write_text

    ppo_cfg = cfg.ppo_config
    if resume is None:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    trainer = PPOTrainer(policy, ppo_cfg, ref_model=ref)
    last = run_dir / "checkpoints" / "last"
    if resume is not None:
        if (run_dir / DONE).exists():
            raise T5LabError(f"--resume {run_dir}: the run is finished (DONE exists)")
        rundir.clean_stale(run_dir)  # temp dirs of a cut save; a checkpoint moved aside is put back
        if last.is_dir():
            for f in sorted(last.rglob("*")):
                if f.is_file() and rundir.verification_on():
                    rundir.verify(f, run_dir)
            try:
                trainer.load(last)
            except (ValueError, OSError, RuntimeError) as err:
                raise T5LabError(f"{last}: not a loadable PPO checkpoint ({str(err).splitlines()[0][:120]}); start a new run") from None
        rundir.truncate_samples(run_dir / "samples.txt", trainer.step_count)
    logger = RunCSVLogger(run_dir)
    logger.truncate_after(trainer.step_count)

    batch = ppo_cfg.batch_size
    order_gen = torch.Generator().manual_seed(ppo_cfg.seed + 1)
    n = len(prompts)
    perms: list[list[int]] = []  # prompt order: a fresh permutation per pass over the prompts

    def batch_indices(step: int) -> list[int]:
        start = step * batch
        while len(perms) * n < start + batch:
            perms.append(torch.randperm(n, generator=order_gen).tolist())
        flat = [i for p in perms for i in p]
        return flat[start : start + batch]

    policy.eval()
    for step in range(trainer.step_count, cfg.steps):
        idx = batch_indices(step)
        texts = [prompts[i] for i in idx]
        input_ids, attention_mask = encode_prompts(tokenizer, texts, cfg.prompts.max_length)
        sample = trainer.generate(input_ids, attention_mask)
        responses = decode_responses(tokenizer, sample.response_ids, sample.response_mask)
        scores = compute_scores(reward, texts, responses, [targets[i] for i in idx] if targets else None)
        stats = trainer.step(input_ids, attention_mask, sample, scores)
        done = step + 1
        logger.log_metrics({**stats, "samples": done * batch, "epoch": (done * batch - 1) // n}, step=done)
        if progress:
            print(
                f"step {done}/{cfg.steps}  reward {stats['reward_mean']:.3f}  kl {stats['kl']:.3f}  "
                f"entropy {stats['entropy']:.2f}  clip {stats['clip_frac']:.2f}  len {stats['response_length']:.1f}",
                flush=True,
            )
        if done % cfg.samples_every == 0 or done == cfg.steps:
            lines = [f"== step {done}"]
            for p, r, s in list(zip(texts, responses, scores.tolist()))[: cfg.num_samples]:
                lines.append(f"prompt: {p}\nresponse: {r}\nscore: {s:.4f}")
            atomic_append_text(run_dir / "samples.txt", "\n".join(lines) + "\n\n", point="samples")
        if done % cfg.save_every == 0 or done == cfg.steps:
            # saved whole into a temp dir, hashed into the manifest, then swapped in (t5lab.rundir.save_dir)
            rundir.save_dir(last, lambda tmp: _save_checkpoint(trainer, tokenizer, tmp), run_dir, "ppo_ckpt")
    atomic_save_pretrained(policy, tokenizer, run_dir / "model", run_dir=run_dir)
    atomic_write_text(run_dir / DONE, "", point="done")
    return run_dir


def _save_checkpoint(trainer: Any, tokenizer: Any, tmp: Path) -> None:
    """``PPOTrainer.save`` into ``tmp`` (it writes a directory of its own name: moved up into ``tmp``)."""
    trainer.save(tmp / "ckpt", tokenizer)
    for child in (tmp / "ckpt").iterdir():
        os.replace(child, tmp / child.name)
    (tmp / "ckpt").rmdir()


def plot_reward_curve(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Plots reward mean +- std and the per-sequence KL of a PPO run's metrics.csv to a PNG.

    Args:
        run_dir: A PPO run directory, or ``runs/<name>`` (its newest run).
        path: Output PNG (default: ``<run_dir>/reward.png``).

    Returns:
        The PNG path (written atomically).
    """
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").is_file() and run_dir.is_dir():
        runs = sorted(d for d in run_dir.iterdir() if (d / "metrics.csv").is_file())
        run_dir = runs[-1] if runs else run_dir
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        raise T5LabError(f"{run_dir} has no metrics.csv; give a PPO run directory")
    with open(metrics, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("reward_mean")]
    if not rows:
        raise T5LabError(f"{metrics} has no reward_mean rows; is it a PPO run?")
    step = [int(r["step"]) for r in rows]
    mean = [float(r["reward_mean"]) for r in rows]
    std = [float(r["reward_std"]) for r in rows]
    kl = [float(r["kl"]) for r in rows]

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ax.plot(step, mean, color="tab:blue", alpha=0.5, linewidth=1, label="reward (batch mean)")
    window = max(1, len(mean) // 12)  # moving average: the batch mean of a binary score is noisy
    smooth = [sum(mean[max(0, i - window + 1) : i + 1]) / len(mean[max(0, i - window + 1) : i + 1]) for i in range(len(mean))]
    ax.plot(step, smooth, color="navy", linewidth=2, label=f"reward ({window}-step average)")
    ax.fill_between(step, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                    color="tab:blue", alpha=0.12, label="reward (+- std)")
    ax.set_xlabel("PPO step")
    ax.set_ylabel("reward (classifier score)")
    ax2 = ax.twinx()
    ax2.plot(step, kl, color="tab:red", linestyle="--", label="KL(policy || ref) per response")
    ax2.set_ylabel("KL (nats)")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="lower right", fontsize=8)
    ax.set_title(f"PPO: {run_dir.parent.name}")
    fig.tight_layout()

    path = Path(path) if path is not None else run_dir / "reward.png"
    try:
        atomic_savefig(fig, path)
    finally:
        plt.close(fig)
    return path
