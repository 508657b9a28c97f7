"""GRPO and RLOO: several sampled responses per prompt, a baseline from the group, no value head.

- **GRPO** (Shao et al. 2024, "DeepSeekMath", https://arxiv.org/abs/2402.03300, section 4.1, eq. 3
  with outcome supervision): ``G`` responses per prompt, advantage ``A_i = (r_i - mean(r)) /
  std(r)`` broadcast to every token of response ``i``, PPO's clipped ratio objective per token,
  averaged over each response's tokens and then over responses, plus ``beta * KL`` to the frozen
  reference added to the loss (not to the reward). :func:`group_advantages` and :func:`grpo_loss`
  hold the options: ``scale_rewards=False`` drops the std (the mean-only baseline), and
  ``loss_norm`` picks the normaliser of the token sum:

  ===============  ===============================================  ==============================
  ``loss_norm``    loss                                             source
  ===============  ===============================================  ==============================
  ``"sequence"``   ``mean_i (1/|o_i|) sum_t l_it``                  GRPO (Shao et al., eq. 3)
  ``"token"``      ``sum_it l_it / sum_i |o_i|``                    token-level (DAPO, 2503.14476)
  ``"constant"``   ``sum_it l_it / (n * max_new_tokens)``           Dr. GRPO (Liu et al. 2025)
  ===============  ===============================================  ==============================

  Dr. GRPO ("Understanding R1-Zero-Like Training", https://arxiv.org/abs/2503.20783, section 3.1)
  is ``scale_rewards=False, loss_norm="constant"``: both the std division (a difficulty bias) and
  the per-response ``1/|o_i|`` (a length bias) are removed.

  The KL term is ``kl_estimator="k3"`` (the paper's eq. 4: ``ref/pi - log(ref/pi) - 1`` at the
  sampled token, with the current policy) or ``"exact"`` (``KL(pi(.|s_t) || ref(.|s_t))`` summed
  over the processed vocabulary, :func:`t5lab.rl.kl.exact_kl`), both differentiable in the policy.

- **RLOO** (Ahmadian et al. 2024, "Back to Basics", https://arxiv.org/abs/2402.14740, section 3.2,
  after Kool et al. 2019): ``k`` responses per prompt, each response's reward ``R_i = score_i -
  beta * KL_i`` (sequence KL to the reference), baseline the mean of the *other* ``k - 1`` rewards
  (:func:`leave_one_out_advantages`), and the sequence-level REINFORCE loss ``-A_i log pi(y_i|x)``
  (:func:`rloo_loss`); with ``cliprange`` the ratio of whole-sequence probabilities is clipped as
  in PPO, which only matters for ``epochs > 1``.

Masks: every sum runs over real response tokens only (``response_mask``); tokens after EOS are
padding and add nothing. The models stay in eval mode (no dropout), so the first pass reproduces
the rollout's log-probs (ratio 1).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from t5lab.rl.core import (
    CheckpointMixin,
    entropy_from_logprobs,
    gather_tokens,
    masked_mean,
    processed_logprobs,
    reference_logprobs,
)
from t5lab.rl.kl import KL_ESTIMATORS, exact_kl, kl_per_token, sampled_kl
from t5lab.rl.sampler import SampleOutput, respond_to_batch

LOSS_NORMS = ("sequence", "token", "constant")

# ----------------------------------------------------------------------------- advantages


def group_advantages(
    scores: torch.Tensor, group_size: int, scale_rewards: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """GRPO's group-relative advantages of ``(n * G,)`` scores laid out group after group.

    ``A_i = r_i - mean(r_group)``, divided by ``std(r_group) + eps`` (unbiased std) when
    ``scale_rewards`` (GRPO); without it (Dr. GRPO) only the mean is subtracted. A group whose
    scores are all equal gets advantage 0 either way.

    Returns:
        ``(n * G,)`` float32 advantages.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for a group baseline, got {group_size}")
    r = scores.float().reshape(-1, group_size)  # (n, G)
    adv = r - r.mean(1, keepdim=True)
    if scale_rewards:
        adv = adv / (r.std(1, keepdim=True) + eps)
    return adv.reshape(-1)


def leave_one_out_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """RLOO's advantages ``R_i - mean_{j != i} R_j`` of ``(n * k,)`` rewards, group after group.

    Equal to ``k / (k - 1) * (R_i - mean(R))``; it sums to 0 within a group.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 for a leave-one-out baseline, got {k}")
    r = rewards.float().reshape(-1, k)  # (n, k)
    baseline = (r.sum(1, keepdim=True) - r) / (k - 1)
    return (r - baseline).reshape(-1)


# ----------------------------------------------------------------------------- losses


def clipped_surrogate(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, cliprange: float | None
) -> torch.Tensor:
    """``max(-A r, -A clip(r, 1 - eps, 1 + eps))`` with ``r = exp(logp - logp_old)`` (elementwise).

    ``cliprange=None``: ``-A r`` (the REINFORCE gradient at ``r = 1``).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    loss = -advantages * ratio
    if cliprange is None:
        return loss
    return torch.max(loss, -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange))


def normalise_tokens(per_token: torch.Tensor, mask: torch.Tensor, loss_norm: str, max_new_tokens: int) -> torch.Tensor:
    """Reduces ``(B, T)`` per-token losses to a scalar with GRPO's ``sequence`` / ``token`` / ``constant`` rule."""
    mask = mask.to(per_token.dtype)
    total = per_token * mask
    if loss_norm == "sequence":
        return (total.sum(1) / mask.sum(1).clamp_min(1.0)).mean()
    if loss_norm == "token":
        return total.sum() / mask.sum().clamp_min(1.0)
    if loss_norm == "constant":
        return total.sum() / (per_token.shape[0] * max_new_tokens)
    raise ValueError(f"unknown loss_norm {loss_norm!r}; use one of {LOSS_NORMS}")


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    loss_norm: str = "sequence",
    max_new_tokens: int = 1,
    kl: torch.Tensor | None = None,
    beta: float = 0.0,
) -> torch.Tensor:
    """GRPO's loss: the clipped surrogate per token (sequence advantage broadcast) plus ``beta * KL_t``.

    Args:
        logprobs, old_logprobs: ``(B, T)`` log-probs of the sampled tokens, current and rollout.
        advantages: ``(B,)`` one advantage per response.
        mask: ``(B, T)`` response mask.
        kl: ``(B, T)`` differentiable per-token KL to the reference (None: no KL term).
    """
    per_token = clipped_surrogate(logprobs, old_logprobs, advantages[:, None], cliprange)
    if kl is not None and beta:
        per_token = per_token + beta * kl
    return normalise_tokens(per_token, mask, loss_norm, max_new_tokens)


def rloo_loss(
    seq_logprobs: torch.Tensor, old_seq_logprobs: torch.Tensor, advantages: torch.Tensor, cliprange: float | None
) -> torch.Tensor:
    """Sequence-level REINFORCE ``mean_i -A_i log pi(y_i | x_i)``; with ``cliprange`` the clipped
    ratio of whole-sequence probabilities (PPO's surrogate on sequences). All ``(B,)``."""
    if cliprange is None:
        return -(advantages * seq_logprobs).mean()
    return clipped_surrogate(seq_logprobs, old_seq_logprobs, advantages, cliprange).mean()


# ----------------------------------------------------------------------------- configs


@dataclass
class GroupConfig:
    """Settings shared by GRPO and RLOO (the defaults suit tiny models on a CPU).

    Attributes:
        learning_rate: Adam learning rate.
        batch_size: Prompts per step; each gets ``group_size`` responses.
        group_size: Responses per prompt (GRPO's G, RLOO's k); >= 2.
        mini_batch_size: Responses per gradient step; must divide ``batch_size * group_size``.
        epochs: Passes over each rollout (1: on-policy, the ratio stays 1).
        kl_coef: beta of the KL to the frozen reference (0: no reference pass at all).
        kl_estimator: How the KL is estimated (see each algorithm).
        max_grad_norm: Gradient-norm clip (0: none).
        max_new_tokens, temperature, top_k, top_p: Sampling (as in PPO).
        seed: Seed of sampling and minibatch shuffling.
    """

    section: ClassVar[str] = "group"
    learning_rate: float = 1e-4
    batch_size: int = 8
    group_size: int = 4
    mini_batch_size: int = 16
    epochs: int = 1
    kl_coef: float = 0.04
    kl_estimator: str = "exact"
    max_grad_norm: float = 1.0
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        s = self.section
        if self.group_size < 2:
            raise ValueError(
                f"{s}.group_size={self.group_size}: a group baseline needs >= 2 responses per prompt"
            )
        rows = self.batch_size * self.group_size
        if self.batch_size < 1 or self.mini_batch_size < 1 or rows % self.mini_batch_size:
            raise ValueError(
                f"{s}.mini_batch_size={self.mini_batch_size} must divide {s}.batch_size * {s}.group_size = {rows}"
            )
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{s}.{name} must be > 0, got {getattr(self, name)}")
        for name in ("kl_coef", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{s}.{name} must be >= 0, got {getattr(self, name)}")
        if self.epochs < 1 or self.max_new_tokens < 1:
            raise ValueError(f"{s}.epochs and {s}.max_new_tokens must be >= 1")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"{s}.top_k must be >= 0 (0 or null: off), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"{s}.top_p must be in (0, 1] (1 or null: off), got {self.top_p}")


@dataclass
class GRPOConfig(GroupConfig):
    """GRPO settings (see the module docstring for the paper variant of each option).

    Attributes:
        cliprange: Ratio clip epsilon.
        scale_rewards: Divide the group-centred scores by the group's std (GRPO); False: mean only
            (Dr. GRPO).
        loss_norm: ``"sequence"`` (GRPO), ``"token"`` or ``"constant"`` (Dr. GRPO).
        kl_estimator: ``"exact"`` (full processed vocabulary) or ``"k3"`` (GRPO's eq. 4).
    """

    section: ClassVar[str] = "grpo"
    cliprange: float = 0.2
    scale_rewards: bool = True
    loss_norm: str = "sequence"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_estimator not in ("exact", "k3"):
            raise ValueError(f"grpo.kl_estimator={self.kl_estimator!r}: use exact or k3")
        if self.loss_norm not in LOSS_NORMS:
            raise ValueError(f"grpo.loss_norm={self.loss_norm!r}: use one of {', '.join(LOSS_NORMS)}")
        if not self.cliprange > 0:
            raise ValueError(f"grpo.cliprange must be > 0, got {self.cliprange}")


@dataclass
class RLOOConfig(GroupConfig):
    """RLOO settings.

    Attributes:
        cliprange: Clip of the sequence ratio (None: plain REINFORCE, the paper's form).
        kl_estimator: KL in the reward, summed over the response: ``"k1"`` (``log pi - log ref``
            at the sampled tokens, the paper's), ``"k3"`` or ``"exact"`` (the exact KL's gradient
            through ``pi(.|s_t)`` is added to the loss, as in PPO; docs/rl.md).
    """

    section: ClassVar[str] = "rloo"
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    cliprange: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"rloo.kl_estimator={self.kl_estimator!r}: use one of {', '.join(KL_ESTIMATORS)}")
        if self.cliprange is not None and not self.cliprange > 0:
            raise ValueError(f"rloo.cliprange must be > 0 or null (no clipping), got {self.cliprange}")


# ----------------------------------------------------------------------------- trainers


class GroupTrainer(CheckpointMixin):
    """What GRPO and RLOO share: group sampling, rollout scoring, minibatch passes, persistence.

    Subclasses set :meth:`advantages` (from the rollout) and :meth:`loss` (one minibatch).

    Args:
        policy: A seq2seq or causal LM (t5, pseudo_dec, decoder_only, gpt2; a value head is ignored).
        config: :class:`GRPOConfig` or :class:`RLOOConfig`.
        ref_model: Frozen reference; default: a deep copy of ``policy`` taken now (none when
            ``kl_coef == 0``).
        optimizer: Default: Adam on the policy's trainable parameters.
    """

    def __init__(
        self,
        policy: nn.Module,
        config: GroupConfig,
        ref_model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.policy = policy.eval()
        self.config = config
        self.ref_model = None
        if config.kl_coef > 0:
            self.ref_model = (ref_model if ref_model is not None else copy.deepcopy(policy)).eval()
            self.ref_model.requires_grad_(False)
        self.optimizer = optimizer or torch.optim.Adam(
            [p for p in policy.parameters() if p.requires_grad], lr=config.learning_rate
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step_count = 0

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SampleOutput:
        """``group_size`` responses per prompt; row ``i * G + j`` is response ``j`` of prompt ``i``.

        Pass the repeated prompts (:meth:`repeat`) to :meth:`step`.
        """
        c = self.config
        ids, mask = self.repeat(input_ids, attention_mask)
        return respond_to_batch(
            self.policy.eval(), ids, mask, max_new_tokens=c.max_new_tokens, temperature=c.temperature,
            top_k=c.top_k, top_p=c.top_p, generator=self.generator,
        )

    def repeat(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each prompt ``group_size`` times in a row."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        g = self.config.group_size
        return input_ids.repeat_interleave(g, 0), attention_mask.repeat_interleave(g, 0)

    def _logprobs(self, input_ids, attention_mask, response):  # noqa: ANN001, ANN202
        c = self.config
        return processed_logprobs(self.policy, input_ids, attention_mask, response, c.temperature, c.top_k, c.top_p)[0]

    def advantages(self, scores: torch.Tensor, kl: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """``(B,)`` advantages of a rollout from its scores and per-token KL (None without a reference)."""
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor], logprobs_full: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar loss of one minibatch and its statistics."""
        raise NotImplementedError

    def step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        sample: SampleOutput,
        scores: torch.Tensor,
    ) -> dict[str, float]:
        """One update from a group rollout.

        Args:
            input_ids: ``(B * G, P)`` repeated prompts (:meth:`repeat`), rows grouped by prompt.
            attention_mask: ``(B * G, P)`` or None.
            sample: The responses from :meth:`generate`.
            scores: ``(B * G,)`` one reward per response.
        """
        c = self.config
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows = c.batch_size * c.group_size
        if input_ids.shape[0] != rows:
            raise ValueError(f"step got {input_ids.shape[0]} rows but batch_size * group_size = {rows}")
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        if scores.shape[0] != rows or not torch.isfinite(scores).all():
            raise ValueError(f"need {rows} finite scores, got {scores.shape[0]}")
        response, mask = sample.response_ids, sample.response_mask.float()

        self.policy.eval()
        with torch.no_grad():
            logprobs_full = self._logprobs(input_ids, attention_mask, response)
            old_logprobs = gather_tokens(logprobs_full, response) * mask
            ref_full, kl = None, None
            if self.ref_model is not None:
                ref_full = reference_logprobs(self.ref_model, input_ids, attention_mask, response, c.temperature)
                estimator = c.kl_estimator
                kl = kl_per_token(logprobs_full, ref_full, response, estimator) * mask  # type: ignore[arg-type]
            advantages = self.advantages(scores, kl, mask)
            entropy = masked_mean(entropy_from_logprobs(logprobs_full), mask)
            rollout_logprob_err = (old_logprobs - sample.logprobs).abs().max()
        data = {"input_ids": input_ids, "attention_mask": attention_mask, "response": response, "mask": mask,
                "old_logprobs": old_logprobs, "advantages": advantages}
        if ref_full is not None:
            data["ref_full"] = ref_full

        stats_sum: dict[str, float] = {}
        n_updates = 0
        for _ in range(c.epochs):
            order = torch.randperm(rows, generator=self.generator)
            for start in range(0, rows, c.mini_batch_size):
                idx = order[start : start + c.mini_batch_size]
                mb = {k: v[idx] for k, v in data.items()}
                logprobs_mb = self._logprobs(mb["input_ids"], mb["attention_mask"], mb["response"])
                loss, mb_stats = self.loss(mb, logprobs_mb)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if c.max_grad_norm:
                    mb_stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
                mb_stats["loss"] = loss.detach()
                for key, value in mb_stats.items():
                    stats_sum[key] = stats_sum.get(key, 0.0) + float(value)
                n_updates += 1
        self.step_count += 1
        stats = {key: value / n_updates for key, value in stats_sum.items()}
        groups = scores.reshape(-1, c.group_size)
        stats.update(
            reward_mean=float(scores.mean()),
            reward_std=float(scores.std()),
            group_reward_std=float(groups.std(1).mean()),
            kl=float(kl.sum(1).mean()) if kl is not None else 0.0,
            entropy=float(entropy),
            advantage_abs=float(advantages.abs().mean()),
            response_length=float(mask.sum(1).mean()),
            rollout_logprob_err=float(rollout_logprob_err),
        )
        return stats


class GRPOTrainer(GroupTrainer):
    """GRPO (Shao et al. 2024): group-normalised advantages, clipped ratio, KL in the loss."""

    config: GRPOConfig

    def advantages(self, scores: torch.Tensor, kl: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        # GRPO keeps the KL out of the reward: it is a loss term (eq. 3)
        return group_advantages(scores, self.config.group_size, self.config.scale_rewards)

    def loss(self, batch: dict[str, torch.Tensor], logprobs_full: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        mask = batch["mask"]
        logprobs = gather_tokens(logprobs_full, batch["response"])
        kl = None
        if "ref_full" in batch:
            if c.kl_estimator == "exact":
                kl = exact_kl(logprobs_full, batch["ref_full"])
            else:  # k3 with the current policy, differentiable (GRPO eq. 4)
                ref = gather_tokens(batch["ref_full"], batch["response"])
                kl = sampled_kl(logprobs, ref, "k3")
        loss = grpo_loss(logprobs, batch["old_logprobs"], batch["advantages"], mask, c.cliprange,
                         c.loss_norm, c.max_new_tokens, kl, c.kl_coef)
        with torch.no_grad():
            ratio = torch.exp((logprobs - batch["old_logprobs"]).masked_fill(mask == 0, 0.0))
            stats = {"clip_frac": masked_mean(((ratio - 1).abs() > c.cliprange).float(), mask)}
            if kl is not None:
                stats["kl_loss"] = masked_mean(kl, mask)
        return loss, stats


class RLOOTrainer(GroupTrainer):
    """RLOO (Ahmadian et al. 2024): leave-one-out baseline, sequence-level REINFORCE."""

    config: RLOOConfig

    def advantages(self, scores: torch.Tensor, kl: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        rewards = scores if kl is None else scores - self.config.kl_coef * kl.sum(1)
        return leave_one_out_advantages(rewards, self.config.group_size)

    def loss(self, batch: dict[str, torch.Tensor], logprobs_full: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        mask = batch["mask"]
        seq = (gather_tokens(logprobs_full, batch["response"]) * mask).sum(1)  # (b,) log pi(y | x)
        old_seq = batch["old_logprobs"].sum(1)
        loss = rloo_loss(seq, old_seq, batch["advantages"], c.cliprange)
        stats: dict[str, torch.Tensor] = {}
        if "ref_full" in batch and c.kl_estimator == "exact":
            # as in PPO: the exact KL_t is a function of the state, so its gradient through
            # pi(.|s_t) is added analytically (per response: the sum over its tokens)
            kl_direct = (exact_kl(logprobs_full, batch["ref_full"]) * mask).sum(1).mean()
            loss = loss + c.kl_coef * kl_direct
            stats["kl_loss"] = kl_direct.detach()
        if c.cliprange is not None:
            with torch.no_grad():
                stats["clip_frac"] = ((torch.exp(seq - old_seq) - 1).abs() > c.cliprange).float().mean()
        return loss, stats


TRAINERS: dict[str, tuple[type[GroupConfig], type[GroupTrainer]]] = {
    "grpo": (GRPOConfig, GRPOTrainer),
    "rloo": (RLOOConfig, RLOOTrainer),
}
