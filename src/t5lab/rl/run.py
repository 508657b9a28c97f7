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
from pydantic import ValidationError, field_validator

from t5lab import rundir
from t5lab.config import Section, apply_overrides, fix_floats, one_line, read_yaml
from t5lab.errors import ConfigError, T5LabError
from t5lab.fileio import atomic_savefig
from t5lab.rl.ppo import PPOConfig

DONE = "DONE"


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------


class PolicySection(Section):
    """Where the policy starts: a model dir, a run dir or ``runs/<name>`` (newest finished run)."""

    init: str
    # frozen reference for the KL penalty; default: the policy's starting weights
    ref: str | None = None


class PromptsSection(Section):
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


class RewardSection(Section):
    """The reward: a built-in name or an import path, with options for a factory."""

    fn: str
    options: dict[str, Any] = {}


class EvalSection(Section):
    """Held-out evaluation: mean reward of one sampled response per prompt (``eval_reward``)."""

    n: int = 0  # prompts (0: no evaluation)
    every: int = 10  # steps between evaluations (and at the end)
    seed: int = 12345  # task seed of the held-out prompts, and of their sampling
    temperature: float = 1.0
    max_new_tokens: int = 16
    reward: RewardSection | None = None  # default: the run's reward (DPO: e.g. exact_match here)

    @field_validator("every", "max_new_tokens")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("n")
    @classmethod
    def _non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"must be >= 0 (0: off), got {v}")
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"must be > 0, got {v}")
        return v


class LoopSettings(Section):
    """The loop settings every RL run config has (PPO, GRPO, RLOO, DPO)."""

    name: str = "rl"
    steps: int = 20  # optimisation steps (one rollout, or one batch of pairs, each)
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


class PPORunConfig(LoopSettings):
    """A PPO run: every setting, validated and frozen."""

    name: str = "ppo"
    policy: PolicySection
    prompts: PromptsSection
    reward: RewardSection
    ppo: dict[str, Any] = {}  # PPOConfig fields (see t5lab.rl.ppo.PPOConfig)
    eval: EvalSection = EvalSection()

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


def section_config(cls: type, data: dict[str, Any], section: str) -> Any:
    """A trainer config dataclass (``PPOConfig``, ``GRPOConfig``, ...) from a config section's dict,
    type-checked by pydantic; ValueError naming ``section.key`` on failure (``config key ...``, which
    :func:`t5lab.config.one_line` keeps as it is)."""
    from pydantic import TypeAdapter

    names = list(cls.__dataclass_fields__)
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"config key {section}: unknown key {section}.{unknown[0]}; keys of {section}: {', '.join(names)}")
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if loc:
            msg = f"{section}.{loc}: {msg}"
        raise ValueError(f"config key {msg}" if msg.startswith(f"{section}.") else f"config key {section}: {msg}") from None


def ppo_config(data: dict[str, Any]) -> PPOConfig:
    """``PPOConfig`` from a dict, type-checked by pydantic (ValueError with the key on failure)."""
    return section_config(PPOConfig, data, "ppo")


def rl_one_line(err: ValidationError, what: str = "PPO") -> str:
    """config.py's one-line message for an RL run config's first error (unknown keys point to docs/rl.md)."""
    return one_line(err, keys_hint=f"see docs/rl.md for the keys of a {what} config")


def load_ppo_config(
    path_or_dict: str | os.PathLike | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> PPORunConfig:
    """Loads a PPO config from YAML (or a dict) with ``dotted.key=value`` overrides.

    Raises:
        ConfigError: One line naming the bad key: unknown key, wrong type, bad value.
    """
    raw = read_rl_yaml(path_or_dict, overrides)
    if raw.get("algo") == "ppo":  # a `t5lab rl` config names its algorithm
        del raw["algo"]
    try:
        return PPORunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(rl_one_line(err)) from None


def read_rl_yaml(
    path_or_dict: str | os.PathLike | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """The raw dict of an RL config (config.py's YAML reader and override parser) with overrides applied.

    Unlike ``t5lab train``'s configs, the sections of an RL config are checked by the run config's
    own pydantic model, so an override may create a section that the model then refuses by name.
    """
    raw = apply_overrides(read_yaml(path_or_dict), overrides, check_key=None, sections_only=True)
    return fix_floats(raw)


# ------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------

def load_policy(path: str | os.PathLike) -> Any:
    """The value-head model of a saved LM (its head is new) or of a saved value-head model (loaded).

    Raises:
        T5LabError: When the directory holds a variant without a value-head model.
    """
    import transformers

    from t5lab.rl.rewards import resolve_model_dir
    from t5lab.variants import get_variant, list_variants, variant_of

    directory = resolve_model_dir(path)
    variant = variant_of(directory)  # from config.json's model_type: built-in or registered with --import
    if variant.value_head is None:
        with_head = ", ".join(v for v in list_variants() if get_variant(v).value_head is not None)
        raise T5LabError(
            f"{directory} holds a model of variant {variant.name}, which has no value-head model; PPO needs one of: {with_head}"
        )
    transformers.logging.set_verbosity_error()  # the LOAD REPORT of a fresh value head is expected
    return variant.value_head().from_pretrained(directory).eval()


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

    from t5lab.rl.ppo import PPOTrainer

    cfg = resume_config(resume, load_ppo_config) if resume is not None else None
    if cfg is None:
        if config is None:
            raise ConfigError("give a PPO config file, e.g. t5lab ppo configs/ppo_positive.yaml")
        cfg = config if isinstance(config, PPORunConfig) else load_ppo_config(config, overrides)
    ppo_cfg = cfg.ppo_config
    torch.set_num_threads(cfg.num_threads)

    # -- pieces, all checked before the run directory exists
    pieces = SamplingPieces.load(cfg, ppo_cfg.batch_size, "ppo.batch_size")
    torch.manual_seed(ppo_cfg.seed)  # the fresh value head's initialisation
    policy = load_policy(pieces.policy_dir)
    ref = load_policy(cfg.policy.ref) if cfg.policy.ref else copy.deepcopy(policy)
    run_dir = open_run_dir(cfg, resume, out)
    lock = lock_run_dir(run_dir, "ppo")
    try:
        trainer = PPOTrainer(policy, ppo_cfg, ref_model=ref)
        sampling_loop(cfg, trainer, pieces, run_dir, ppo_cfg.batch_size, ppo_cfg.seed, progress)
    finally:
        lock.release()
    return run_dir


def resume_config(resume: str | os.PathLike, loader: Any) -> Any:
    """The config of the run directory ``resume`` (checked to be a resumable run)."""
    run_dir = Path(resume)
    if not (run_dir / "config.yaml").is_file():
        raise T5LabError(f"--resume {run_dir}: no config.yaml there; give a run directory of the same command")
    if (run_dir / DONE).exists():
        raise T5LabError(f"--resume {run_dir}: the run is finished (DONE exists)")
    return loader(run_dir / "config.yaml")


def open_run_dir(cfg: Any, resume: str | os.PathLike | None, out: str | os.PathLike) -> Path:
    """``resume`` itself, or a new ``out/<name>/<timestamp>`` holding the resolved config.yaml."""
    from t5lab.train.io import atomic_write_text
    from t5lab.train.run import new_run_dir

    if resume is not None:
        return Path(resume)
    run_dir = new_run_dir(out, cfg.name)
    atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    return run_dir


def lock_run_dir(run_dir: Path, command: str) -> Any:
    """Takes ``run_dir``'s lock (t5lab.rundir: one process per run directory) and, on a resume,
    removes what an interrupted write left there. Release it with ``.release()``."""
    lock = rundir.RunLock(run_dir, command).acquire()
    stale = rundir.clean_stale(run_dir)
    if stale:
        print(f"removed {len(stale)} leftover(s) of an interrupted write in {run_dir}")
    return lock


class SamplingPieces:
    """What a sampling run (PPO, GRPO, RLOO) loads from its config: tokenizer, prompts, reward."""

    def __init__(
        self, policy_dir: Path, tokenizer: Any, prompts: list[str], targets: list[str] | None, reward: Any,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.policy_dir, self.tokenizer, self.prompts, self.targets, self.reward = (
            policy_dir, tokenizer, prompts, targets, reward
        )
        self.evaluator = evaluator

    @classmethod
    def load(cls, cfg: Any, batch_size: int, batch_key: str) -> SamplingPieces:
        from transformers import AutoTokenizer

        from t5lab.rl.rewards import load_reward, resolve_model_dir

        policy_dir = resolve_model_dir(cfg.policy.init)
        tokenizer = AutoTokenizer.from_pretrained(policy_dir)
        prompts, targets = load_prompts(cfg.prompts)
        if len(prompts) < batch_size:
            raise ConfigError(f"only {len(prompts)} prompts for {batch_key}={batch_size}; add prompts or lower it")
        reward = load_reward(cfg.reward.fn, cfg.reward.options)
        return cls(policy_dir, tokenizer, prompts, targets, reward, Evaluator.maybe(cfg, tokenizer, reward))


class PromptOrder:
    """Prompt indices of each step: a fresh seeded permutation per pass (the same after a resume)."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        import torch

        self.n, self.batch = n, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.perms: list[list[int]] = []

    def __call__(self, step: int) -> list[int]:
        import torch

        start = step * self.batch
        while len(self.perms) * self.n < start + self.batch:
            self.perms.append(torch.randperm(self.n, generator=self.gen).tolist())
        flat = [i for p in self.perms for i in p]
        return flat[start : start + self.batch]

    def epoch(self, step: int) -> int:
        """The pass over the prompts that step ``step`` (1-based) ended in."""
        return (step * self.batch - 1) // self.n


def append_samples(run_dir: Path, step: int, rows: list[tuple[str, str, float]]) -> None:
    """Adds ``== step N`` and prompt / response / score blocks to samples.txt (rewritten atomically)."""
    from t5lab.train.io import atomic_append_text

    lines = [f"== step {step}"]
    for p, r, s in rows:
        lines.append(f"prompt: {p}\nresponse: {r}\nscore: {s:.4f}")
    atomic_append_text(run_dir / "samples.txt", "\n".join(lines) + "\n\n", point="samples")


def save_checkpoint(trainer: Any, last: Path, tokenizer: Any, run_dir: Path) -> None:
    """``trainer.save`` as one directory swap whose weights' sha256 go into the run's manifest
    (t5lab.rundir.save_dir): a kill leaves the old or the new checkpoint, and both verify."""

    def write(tmp: Path) -> None:
        trainer.save(tmp / "ckpt", tokenizer)  # it writes a directory of its own name: moved up into tmp
        for child in (tmp / "ckpt").iterdir():
            os.replace(child, tmp / child.name)
        (tmp / "ckpt").rmdir()

    rundir.save_dir(last, write, run_dir, "ppo_ckpt")


def load_checkpoint(trainer: Any, last: Path, run_dir: Path) -> None:
    """``trainer.load`` after the manifest's check of every file (``--no-verify``: skipped); one line on failure."""
    if rundir.verification_on():
        for f in sorted(last.rglob("*")):
            if f.is_file():
                rundir.verify(f, run_dir)
    try:
        trainer.load(last)
    except (ValueError, OSError, RuntimeError, KeyError) as err:
        raise T5LabError(f"{last}: not a loadable checkpoint ({str(err).splitlines()[0][:120]}); start a new run") from None


def progress_bar(cfg: Any, start: int, enabled: bool) -> Any:
    """A tqdm bar over the run's steps (on stderr), or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start, desc=cfg.name, unit="step", dynamic_ncols=True)


def finish_run(run_dir: Path, policy: Any, tokenizer: Any, bar: Any) -> None:
    """The final policy (HF format) in ``model/``, then ``DONE``."""
    from t5lab.train.io import atomic_save_pretrained, atomic_write_text

    if bar is not None:
        bar.close()
    atomic_save_pretrained(policy, tokenizer, run_dir / "model", run_dir=run_dir)
    plot_reward_curve(run_dir)  # reward.png: reward (or DPO margin), eval reward and KL by step
    atomic_write_text(run_dir / DONE, "", point="done")


_BAR_KEYS = ("reward_mean", "kl", "entropy", "response_length")


def sampling_loop(
    cfg: Any, trainer: Any, pieces: SamplingPieces, run_dir: Path, batch: int, seed: int, progress: bool,
    group_size: int = 1,
) -> None:
    """The loop of every sampling algorithm: prompts -> responses -> reward -> ``trainer.step``.

    ``trainer.generate`` returns ``group_size`` responses per prompt (rows grouped by prompt);
    metrics.csv gets one row per step, samples.txt a few rollouts every ``samples_every`` steps,
    ``checkpoints/last`` the trainer every ``save_every`` steps, then ``model/`` and ``DONE``.
    """

    from t5lab.rl.rewards import compute_scores
    from t5lab.train.callbacks import RunCSVLogger

    logger = RunCSVLogger(run_dir)
    last = run_dir / "checkpoints" / "last"
    if last.is_dir():
        load_checkpoint(trainer, last, run_dir)
    # what the checkpoint has not seen is logged again: cut metrics.csv and samples.txt back to it
    logger.truncate_after(trainer.step_count)
    rundir.truncate_samples(run_dir / "samples.txt", trainer.step_count)
    order = PromptOrder(len(pieces.prompts), batch, seed + 1)
    evaluator = pieces.evaluator
    clock = WallClock(logger, trainer.step_count)
    if evaluator is not None and trainer.step_count == 0:
        logger.log_metrics({"eval_reward": evaluator(trainer.policy), "wall_s": 0.0}, step=0)
    bar = progress_bar(cfg, trainer.step_count, progress)
    tok = pieces.tokenizer
    trainer.policy.eval()
    for step in range(trainer.step_count, cfg.steps):
        idx = order(step)
        input_ids, attention_mask = encode_prompts(tok, [pieces.prompts[i] for i in idx], cfg.prompts.max_length)
        rows = [i for i in idx for _ in range(group_size)]  # prompt of each response
        sample = trainer.generate(input_ids, attention_mask)
        if group_size > 1:
            input_ids, attention_mask = trainer.repeat(input_ids, attention_mask)
        texts = [pieces.prompts[i] for i in rows]
        responses = decode_responses(tok, sample.response_ids, sample.response_mask)
        targets = [pieces.targets[i] for i in rows] if pieces.targets else None
        scores = compute_scores(pieces.reward, texts, responses, targets)
        stats = trainer.step(input_ids, attention_mask, sample, scores)
        done = step + 1
        stats["wall_s"] = clock()
        if evaluator is not None and (done % evaluator.every == 0 or done == cfg.steps):
            stats["eval_reward"] = clock.excluding(evaluator, trainer.policy)
        logger.log_metrics({**stats, "samples": done * batch, "epoch": order.epoch(done)}, step=done)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{stats[k]:.3g}" for k in (*_BAR_KEYS, "eval_reward") if k in stats})
        if done % cfg.samples_every == 0 or done == cfg.steps:
            append_samples(run_dir, done, list(zip(texts, responses, scores.tolist()))[: cfg.num_samples])
        if done % cfg.save_every == 0 or done == cfg.steps:
            save_checkpoint(trainer, last, tok, run_dir)
    finish_run(run_dir, trainer.policy, tok, bar)


class WallClock:
    """Training wall time in seconds (``wall_s``), continued from the checkpoint's row on a resume;
    evaluations are not counted."""

    def __init__(self, logger: Any, step: int) -> None:
        import time

        row = logger.rows.get(step, {}) if step else {}
        self.offset = float(row.get("wall_s") or 0.0)
        self.start = time.perf_counter()
        self.paused = 0.0

    def __call__(self) -> float:
        import time

        return self.offset + time.perf_counter() - self.start - self.paused

    def excluding(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, its time kept out of ``wall_s``."""
        import time

        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.paused += time.perf_counter() - t0


class Evaluator:
    """Mean reward of one sampled response per held-out prompt (``eval.n`` prompts, ``eval.seed``).

    The prompts come from the run's ``prompts`` task with another seed (or the first ``eval.n``
    lines of ``prompts.file``); the sampling generator is re-seeded each time, so evaluations of
    the same weights are equal and cost the run's own random stream nothing.
    """

    def __init__(self, section: Any, prompts_section: PromptsSection, tokenizer: Any, reward: Any) -> None:
        self.every, self.section = section.every, section
        self.reward, self.tokenizer = reward, tokenizer
        if prompts_section.task is not None:
            src = prompts_section.model_copy(update={"n": section.n, "seed": section.seed})
        else:
            src = prompts_section
        self.prompts, self.targets = load_prompts(src)
        self.prompts = self.prompts[: section.n]
        self.targets = self.targets[: section.n] if self.targets else None
        self.max_length = prompts_section.max_length

    @classmethod
    def maybe(cls, cfg: Any, tokenizer: Any, reward: Any) -> Evaluator | None:
        """The run's evaluator, or None without ``eval.n``; its reward is ``eval.reward`` or ``reward``."""
        from t5lab.rl.rewards import load_reward

        section = cfg.eval
        if section.n == 0:
            return None
        if cfg.prompts is None:
            raise ConfigError("config key eval.n: evaluation needs a prompts: section")
        if section.reward is not None:
            reward = load_reward(section.reward.fn, section.reward.options)
        if reward is None:
            raise ConfigError("config key eval.n: evaluation needs a reward: (or eval.reward:) section")
        return cls(section, cfg.prompts, tokenizer, reward)

    def __call__(self, policy: Any) -> float:
        import torch

        from t5lab.rl.rewards import compute_scores
        from t5lab.rl.sampler import respond_to_batch

        s = self.section
        gen = torch.Generator().manual_seed(s.seed)
        total = 0.0
        for start in range(0, len(self.prompts), 64):
            texts = self.prompts[start : start + 64]
            ids, mask = encode_prompts(self.tokenizer, texts, self.max_length)
            out = respond_to_batch(policy.eval(), ids, mask, max_new_tokens=s.max_new_tokens,
                                   temperature=s.temperature, generator=gen)
            responses = decode_responses(self.tokenizer, out.response_ids, out.response_mask)
            targets = self.targets[start : start + 64] if self.targets else None
            total += float(compute_scores(self.reward, texts, responses, targets).sum())
        return total / len(self.prompts)


def _metric_rows(run_dir: str | os.PathLike) -> tuple[Path, list[dict[str, str]]]:
    """A run directory (``runs/<name>``: its newest run) and its metrics.csv rows."""
    import csv

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").is_file() and run_dir.is_dir():
        runs = sorted(d for d in run_dir.iterdir() if (d / "metrics.csv").is_file())
        run_dir = runs[-1] if runs else run_dir
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        raise T5LabError(f"{run_dir} has no metrics.csv; give an RL run directory")
    with open(metrics, newline="") as fh:
        return run_dir, list(csv.DictReader(fh))


def _algo(run_dir: Path) -> str:
    try:
        return str(yaml.safe_load((run_dir / "config.yaml").read_text()).get("algo", "ppo"))
    except (OSError, yaml.YAMLError, AttributeError):
        return "ppo"


def _moving_average(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))]


def plot_reward_curve(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Plots a run's curves from its metrics.csv to a PNG.

    PPO / GRPO / RLOO: reward mean +- std (and its moving average), ``eval_reward`` when the run
    evaluates, and the per-response KL on a second axis. DPO: the implicit-reward margin and
    accuracy, and ``eval_reward``.

    Args:
        run_dir: A run directory, or ``runs/<name>`` (its newest run).
        path: Output PNG (default: ``<run_dir>/reward.png``).

    Returns:
        The PNG path (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir, all_rows = _metric_rows(run_dir)
    algo = _algo(run_dir)
    key = "reward_margin" if algo == "dpo" else "reward_mean"
    rows = [r for r in all_rows if r.get(key)]
    if not rows:
        raise T5LabError(f"{run_dir / 'metrics.csv'} has no {key} rows; is it a finished step of an RL run?")
    evals = [(int(r["step"]), float(r["eval_reward"])) for r in all_rows if r.get("eval_reward")]
    step = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ax2 = ax.twinx()
    if algo == "dpo":
        ax.plot(step, [float(r["reward_accuracy"]) for r in rows], color="tab:green", alpha=0.7,
                label="implicit-reward accuracy")
        ax2.plot(step, [float(r["reward_margin"]) for r in rows], color="tab:red", linestyle="--",
                 label="implicit-reward margin")
        ax2.set_ylabel("margin (beta x log-ratio)")
    else:
        mean = [float(r["reward_mean"]) for r in rows]
        std = [float(r["reward_std"]) for r in rows]
        ax.plot(step, mean, color="tab:blue", alpha=0.5, linewidth=1, label="reward (batch mean)")
        window = max(1, len(mean) // 12)  # the batch mean of a binary score is noisy
        ax.plot(step, _moving_average(mean, window), color="navy", linewidth=2, label=f"reward ({window}-step average)")
        ax.fill_between(step, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color="tab:blue", alpha=0.12, label="reward (+- std)")
        ax2.plot(step, [float(r["kl"]) for r in rows], color="tab:red", linestyle="--",
                 label="KL(policy || ref) per response")
        ax2.set_ylabel("KL (nats)")
    if evals:
        ax.plot(*zip(*evals), color="black", marker="o", markersize=3, label="eval_reward (held out)")
    ax.set_xlabel(f"{algo.upper()} step")
    ax.set_ylabel("reward")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="lower right", fontsize=8)
    ax.set_title(f"{algo.upper()}: {run_dir.parent.name}")
    fig.tight_layout()

    path = Path(path) if path is not None else run_dir / "reward.png"
    try:
        atomic_savefig(fig, path)
    finally:
        plt.close(fig)
    return path


def plot_comparison(
    runs: dict[str, str | os.PathLike], path: str | os.PathLike, key: str = "eval_reward", x: str = "wall_s",
    ylabel: str | None = None, title: str | None = None,
) -> Path:
    """One figure of ``key`` against ``x`` (training wall time by default) for several runs.

    Args:
        runs: Legend label -> run directory (or ``runs/<name>``).
        path: Output PNG (written atomically).
        key: A metrics.csv column, e.g. ``eval_reward`` (held-out reward) or ``reward_mean``.
        x: ``wall_s`` (training seconds, evaluations excluded) or ``step``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for label, run in runs.items():
        run_dir, rows = _metric_rows(run)
        points = [(float(r[x]), float(r[key])) for r in rows if r.get(key) and r.get(x)]
        if not points:
            raise T5LabError(f"{run_dir / 'metrics.csv'} has no rows with both {x} and {key}")
        ax.plot(*zip(*points), marker="o", markersize=3, label=label)
    ax.set_xlabel("training wall time (s)" if x == "wall_s" else x)
    ax.set_ylabel(ylabel or key)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_savefig(fig, Path(path))
    finally:
        plt.close(fig)
    return Path(path)
