"""``t5lab grpo | rloo | dpo | rl``: YAML config -> policy, reward / pairs -> steps -> run directory.

The configs share PPO's sections (``policy``, ``prompts``, ``reward``, ``eval``, loop settings;
:mod:`t5lab.rl.run`) and add the algorithm's own section (``grpo:``, ``rloo:`` or ``dpo:``, the
fields of :class:`~t5lab.rl.group.GRPOConfig`, :class:`~t5lab.rl.group.RLOOConfig` or
:class:`~t5lab.rl.dpo.DPOConfig`). ``algo:`` names the algorithm (``t5lab rl`` reads it; the
per-algorithm commands set it). The run directory has the layout of ``t5lab ppo``'s, plus for DPO
``pairs.jsonl`` (when built from a task) and ``ref_logprobs.safetensors`` (the reference's sums,
computed once, keyed by the sha256 of the encoded pairs).
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError, field_validator, model_validator

from t5lab.config import Section
from t5lab.errors import ConfigError, T5LabError
from t5lab.rl.dpo import DPOConfig
from t5lab.rl.group import GRPOConfig, RLOOConfig
from t5lab.rl.run import (
    EvalSection,
    LoopSettings,
    PolicySection,
    PromptsSection,
    RewardSection,
    read_rl_yaml,
    rl_one_line,
    section_config,
)

ALGOS = ("ppo", "grpo", "rloo", "dpo")
_CONFIGS: dict[str, type] = {"grpo": GRPOConfig, "rloo": RLOOConfig, "dpo": DPOConfig}


class _AlgoRun(LoopSettings):
    """A run config with an ``algo`` and that algorithm's section."""

    @property
    def algo_config(self) -> Any:
        return section_config(_CONFIGS[self.algo], getattr(self, self.algo), self.algo)  # type: ignore[attr-defined]

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        data[self.algo] = asdict(self.algo_config)  # type: ignore[attr-defined]  # every default written out
        return yaml.safe_dump(data, sort_keys=False)


class GroupRunConfig(_AlgoRun):
    """A GRPO or RLOO run."""

    algo: Literal["grpo", "rloo"]
    policy: PolicySection
    prompts: PromptsSection
    reward: RewardSection
    grpo: dict[str, Any] = {}
    rloo: dict[str, Any] = {}
    eval: EvalSection = EvalSection()

    @model_validator(mode="after")
    def _section(self) -> GroupRunConfig:
        other = "rloo" if self.algo == "grpo" else "grpo"
        if getattr(self, other):
            raise ValueError(f"config key {other}: this is a {self.algo} run; put the settings under {self.algo}:")
        self.algo_config  # noqa: B018  (raises a one-line ValueError naming the key)
        return self


class PairsSection(Section):
    """Preference pairs: a JSONL file, or built from ``prompts`` + ``reward`` by sampling ``generator``."""

    file: str | None = None
    generator: str | None = None  # model / run dir to sample from (default: policy.init)
    k: int = 4  # samples per prompt; the best and the worst make a pair
    max_new_tokens: int = 16
    temperature: float = 1.0
    seed: int = 0

    @field_validator("k")
    @classmethod
    def _k(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"must be >= 2 (a pair is the best and the worst of k samples), got {v}")
        return v


class DPORunConfig(_AlgoRun):
    """A DPO / IPO run."""

    algo: Literal["dpo"]
    policy: PolicySection
    pairs: PairsSection
    prompts: PromptsSection | None = None  # needed to build pairs and for eval
    reward: RewardSection | None = None
    dpo: dict[str, Any] = {}
    eval: EvalSection = EvalSection()

    @model_validator(mode="after")
    def _pairs(self) -> DPORunConfig:
        if self.pairs.file is None and (self.prompts is None or self.reward is None):
            raise ValueError(
                "config key pairs: give pairs.file (JSONL with prompt, chosen, rejected), "
                "or prompts: and reward: to build pairs from a generator's samples"
            )
        if self.eval.n and (self.prompts is None or (self.reward is None and self.eval.reward is None)):
            raise ValueError("config key eval.n: evaluation needs prompts: and reward: (or eval.reward:) sections")
        self.algo_config  # noqa: B018
        return self


def load_rl_config(
    path_or_dict: str | os.PathLike | dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    algo: str | None = None,
) -> Any:
    """Loads a GRPO / RLOO / DPO (or PPO) run config with ``dotted.key=value`` overrides.

    Args:
        algo: The command's algorithm; None: the config's ``algo:`` key.

    Raises:
        ConfigError: One line naming the bad key.
    """
    raw = read_rl_yaml(path_or_dict, overrides)
    given = raw.get("algo")
    if algo is None:
        algo = given
        if algo is None:
            raise ConfigError(f"config key algo is missing; add algo: one of {', '.join(ALGOS)}")
    elif given is not None and given != algo:
        raise ConfigError(f"config key algo: {given!r}, but this is `t5lab {algo}`; run `t5lab {given}` or fix algo:")
    if algo not in ALGOS:
        raise ConfigError(f"config key algo: must be one of {', '.join(ALGOS)}; got {algo!r}")
    if algo == "ppo":
        from t5lab.rl.run import load_ppo_config

        raw.pop("algo", None)
        return load_ppo_config(raw)
    raw["algo"] = algo
    cls = DPORunConfig if algo == "dpo" else GroupRunConfig
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(rl_one_line(err, algo.upper())) from None


# ------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------

def load_lm(path: str | os.PathLike) -> Any:
    """The generator at ``path`` (a model, run or ``runs/<name>`` dir): t5, pseudo_dec, decoder_only
    (causal or prefix LM), gpt2, or one of their value-head models (the head is carried along).

    Raises:
        T5LabError: For a model that is not a generator (an EncT5 classifier, ...).
    """
    import t5lab  # noqa: F401  (registers the variants with the Auto classes)
    from t5lab.rl.rewards import resolve_model_dir
    from t5lab.variants import get_variant, list_variants, variant_of

    directory = resolve_model_dir(path)
    variant = variant_of(directory)  # from config.json's model_type: built-in or registered with --import
    if not variant.generates:
        generators = ", ".join(v for v in list_variants() if get_variant(v).generates)
        raise T5LabError(f"{directory} holds a model of variant {variant.name}, which generates no text; RL needs a generator: {generators}")
    return variant.auto_class().from_pretrained(directory).eval()


# ------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------


def run_rl(
    config: str | os.PathLike | dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | os.PathLike = "runs",
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    algo: str | None = None,
) -> Path:
    """Runs (or resumes) a PPO, GRPO, RLOO or DPO config; returns the run directory.

    Everything that can fail on bad input fails before the run directory is created.
    """
    from t5lab.rl.run import resume_config, run_ppo

    if resume is not None:
        cfg = resume_config(resume, lambda path: load_rl_config(path, algo=_algo_of(path)))
    else:
        if config is None:
            raise ConfigError("give a config file, e.g. t5lab grpo my_grpo.yaml (see docs/rl.md)")
        cfg = load_rl_config(config, overrides, algo)
    kind = getattr(cfg, "algo", "ppo")
    if algo is not None and kind != algo:
        raise T5LabError(f"--resume {resume}: that is a {kind} run; resume it with `t5lab {kind} --resume`")
    if kind == "ppo":
        return run_ppo(cfg, out=out, resume=resume, progress=progress)
    if kind == "dpo":
        return _run_dpo(cfg, out, resume, progress)
    return _run_group(cfg, out, resume, progress)


def _algo_of(path: Path) -> str:
    # a PPO run's config.yaml has no algo key (it predates `t5lab rl`)
    return yaml.safe_load(Path(path).read_text()).get("algo", "ppo")


def _run_group(cfg: GroupRunConfig, out: Any, resume: Any, progress: bool) -> Path:
    import torch

    from t5lab.rl.group import TRAINERS
    from t5lab.rl.run import SamplingPieces, lock_run_dir, open_run_dir, sampling_loop

    algo_cfg = cfg.algo_config
    torch.set_num_threads(cfg.num_threads)
    pieces = SamplingPieces.load(cfg, algo_cfg.batch_size, f"{cfg.algo}.batch_size")
    policy = load_lm(pieces.policy_dir)
    ref = None
    if algo_cfg.kl_coef > 0:
        ref = load_lm(cfg.policy.ref) if cfg.policy.ref else copy.deepcopy(policy)
    run_dir = open_run_dir(cfg, resume, out)
    lock = lock_run_dir(run_dir, cfg.algo)
    try:
        trainer = TRAINERS[cfg.algo][1](policy, algo_cfg, ref_model=ref)
        sampling_loop(cfg, trainer, pieces, run_dir, algo_cfg.batch_size, algo_cfg.seed, progress,
                      group_size=algo_cfg.group_size)
    finally:
        lock.release()
    return run_dir


def _pairs_of(cfg: DPORunConfig, tokenizer: Any, reward: Any, run_dir: Path | None) -> list[dict[str, str]]:
    """The run's pairs: the file, or pairs.jsonl of the run dir (a resume), or built now."""
    from t5lab.rl.dpo import build_pairs, read_pairs
    from t5lab.rl.run import load_prompts

    if cfg.pairs.file is not None:
        return read_pairs(cfg.pairs.file)
    if run_dir is not None and (run_dir / "pairs.jsonl").is_file():
        return read_pairs(run_dir / "pairs.jsonl")
    prompts, targets = load_prompts(cfg.prompts)
    generator = load_lm(cfg.pairs.generator or cfg.policy.init)
    p = cfg.pairs
    pairs = build_pairs(generator, tokenizer, prompts, targets, reward, k=p.k, max_new_tokens=p.max_new_tokens,
                        temperature=p.temperature, prompt_length=cfg.prompts.max_length, seed=p.seed)
    if not pairs:
        raise T5LabError(
            f"no pairs: all {p.k} samples of every prompt scored the same; raise pairs.k or pairs.temperature"
        )
    return pairs


def _reference_cache(run_dir: Path, trainer: Any, ref: Any, batches: list[Any], progress: bool) -> Any:
    """``(N, 2)`` reference sums, read from ``ref_logprobs.safetensors`` or computed once and written."""
    import hashlib

    import torch
    from safetensors.torch import load_file, save_file

    digest = hashlib.sha256()
    for b in batches:
        for t in (b.input_ids, b.attention_mask, b.chosen, b.chosen_mask, b.rejected, b.rejected_mask):
            digest.update(t.numpy().tobytes())
            digest.update(str(tuple(t.shape)).encode())
    key = digest.hexdigest()
    path = run_dir / "ref_logprobs.safetensors"
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            if (fh.metadata() or {}).get("pairs_sha256") == key:
                return load_file(path)["ref_logprobs"]
    if progress:
        print(f"reference log-probs of {sum(b.input_ids.shape[0] for b in batches)} pairs (computed once)")
    values = torch.cat([trainer.reference_logprobs(ref, b) for b in batches]).contiguous()
    tmp = path.with_name("." + path.name + ".tmp")
    save_file({"ref_logprobs": values}, str(tmp), metadata={"pairs_sha256": key})
    os.replace(tmp, path)
    return values


def _run_dpo(cfg: DPORunConfig, out: Any, resume: Any, progress: bool) -> Path:
    import torch
    from transformers import AutoTokenizer

    from t5lab.rl.dpo import DPOTrainer, PairBatch, write_pairs
    from t5lab.rl.rewards import load_reward, resolve_model_dir
    from t5lab.rl.run import Evaluator, finish_run, lock_run_dir, open_run_dir

    dpo_cfg: DPOConfig = cfg.algo_config
    torch.set_num_threads(cfg.num_threads)
    policy_dir = resolve_model_dir(cfg.policy.init)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    reward = load_reward(cfg.reward.fn, cfg.reward.options) if cfg.reward is not None else None
    evaluator = Evaluator.maybe(cfg, tokenizer, reward)
    pairs = _pairs_of(cfg, tokenizer, reward, Path(resume) if resume is not None else None)
    if len(pairs) < dpo_cfg.batch_size:
        raise ConfigError(f"only {len(pairs)} pairs for dpo.batch_size={dpo_cfg.batch_size}; add pairs or lower it")
    policy = load_lm(policy_dir)
    ref = load_lm(cfg.policy.ref) if cfg.policy.ref else copy.deepcopy(policy)
    prompt_length = cfg.prompts.max_length if cfg.prompts is not None else PromptsSection().max_length
    # pairs are encoded in fixed chunks (one per batch of the first pass) for the reference cache
    chunks = [pairs[i : i + dpo_cfg.batch_size] for i in range(0, len(pairs), dpo_cfg.batch_size)]
    encoded = [PairBatch.encode(tokenizer, c, prompt_length, dpo_cfg.max_length) for c in chunks]

    run_dir = open_run_dir(cfg, resume, out)
    lock = lock_run_dir(run_dir, "dpo")
    try:
        if cfg.pairs.file is None and not (run_dir / "pairs.jsonl").is_file():
            write_pairs(pairs, run_dir / "pairs.jsonl")
        trainer = DPOTrainer(policy, dpo_cfg)
        ref_all = _reference_cache(run_dir, trainer, ref, encoded, progress)  # (N, 2)
        del ref
        _dpo_loop(cfg, trainer, tokenizer, evaluator, pairs, ref_all, prompt_length, run_dir, progress)
        finish_run(run_dir, trainer.policy, tokenizer, None)
    finally:
        lock.release()
    return run_dir


def _dpo_loop(
    cfg: DPORunConfig, trainer: Any, tokenizer: Any, evaluator: Any, pairs: list[dict[str, str]], ref_all: Any,
    prompt_length: int, run_dir: Path, progress: bool,
) -> None:
    """DPO's loop: a seeded order of pairs, one step per batch, metrics / samples / checkpoints."""
    from t5lab import rundir
    from t5lab.rl.dpo import PairBatch
    from t5lab.rl.run import (
        PromptOrder,
        WallClock,
        append_samples,
        load_checkpoint,
        progress_bar,
        save_checkpoint,
    )
    from t5lab.train.callbacks import RunCSVLogger

    c = trainer.config
    logger = RunCSVLogger(run_dir)
    last = run_dir / "checkpoints" / "last"
    if last.is_dir():
        load_checkpoint(trainer, last, run_dir)
    logger.truncate_after(trainer.step_count)
    rundir.truncate_samples(run_dir / "samples.txt", trainer.step_count)
    order = PromptOrder(len(pairs), c.batch_size, c.seed + 1)
    clock = WallClock(logger, trainer.step_count)
    if evaluator is not None and trainer.step_count == 0:
        logger.log_metrics({"eval_reward": evaluator(trainer.policy), "wall_s": 0.0}, step=0)
    bar = progress_bar(cfg, trainer.step_count, progress)
    for step in range(trainer.step_count, cfg.steps):
        idx = order(step)
        batch = PairBatch.encode(tokenizer, [pairs[i] for i in idx], prompt_length, c.max_length)
        stats = trainer.step(batch, ref_all[idx])
        done = step + 1
        stats["wall_s"] = clock()
        if evaluator is not None and (done % cfg.eval.every == 0 or done == cfg.steps):
            stats["eval_reward"] = clock.excluding(evaluator, trainer.policy)
        logger.log_metrics({**stats, "samples": done * c.batch_size, "epoch": order.epoch(done)}, step=done)
        if bar is not None:
            bar.update(1)
            keys = ("loss", "reward_margin", "reward_accuracy", "eval_reward")
            bar.set_postfix({k: f"{stats[k]:.3g}" for k in keys if k in stats})
        if done % cfg.samples_every == 0 or done == cfg.steps:
            rows = [(pairs[i]["prompt"], f"chosen: {pairs[i]['chosen']!r}  rejected: {pairs[i]['rejected']!r}",
                     stats["reward_margin"]) for i in idx[: cfg.num_samples]]
            append_samples(run_dir, done, rows)
        if done % cfg.save_every == 0 or done == cfg.steps:
            save_checkpoint(trainer, last, tokenizer, run_dir)
    if bar is not None:
        bar.close()
