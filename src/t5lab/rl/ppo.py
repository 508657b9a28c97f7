"""PPO for T5 variants with a value head (Schulman et al. 2017, https://arxiv.org/abs/1707.06347),
in the RL-from-a-reward-model form of Ziegler et al. 2019 (https://arxiv.org/abs/1909.08593).

One :meth:`PPOTrainer.step` takes a batch of prompts, their sampled responses and one score per
response, and

1. re-runs the policy (log-probs under the processed sampling distribution, values) and the frozen
   reference (same temperature, no truncation) over prompts + responses, without gradients;
2. builds per-token rewards ``r_t = -beta * KL_t`` plus the score on the last real token
   (:func:`per_token_rewards`, :mod:`t5lab.rl.kl`);
3. computes GAE advantages (Schulman et al. 2016, https://arxiv.org/abs/1506.02438) and returns,
   then whitens the advantages over the real tokens (:func:`compute_gae`, :func:`masked_whiten`);
4. runs ``ppo_epochs`` passes of shuffled minibatches of the clipped policy loss plus the clipped
   value loss (:func:`ppo_loss`), with gradient-norm clipping;
5. updates the KL coefficient (fixed, or Ziegler's adaptive controller).

Every masked mean is over real response tokens only: a position after EOS (``response_mask == 0``)
adds nothing to the loss, the KL, the rewards or the advantages. Dropout stays off (the models are
kept in eval mode) so that the first minibatch pass reproduces the rollout's log-probs exactly
(ratio 1), as PPO's importance ratio assumes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from t5lab.rl.core import (
    CheckpointMixin,
    entropy_from_logprobs,
    gather_tokens,
    masked_mean,
    masked_var,
    masked_whiten,
    processed_logprobs,
    reference_logprobs,
)
from t5lab.rl.kl import KL_ESTIMATORS, AdaptiveKLController, FixedKLController, exact_kl, kl_per_token
from t5lab.rl.sampler import SampleOutput, respond_to_batch

__all__ = [  # the masked statistics moved to t5lab.rl.core; importing them from here still works
    "PPOConfig", "PPOTrainer", "compute_gae", "entropy_from_logprobs", "masked_mean", "masked_var",
    "masked_whiten", "per_token_rewards", "ppo_loss",
]


@dataclass
class PPOConfig:
    """PPO hyperparameters (the defaults suit tiny models on a CPU).

    Attributes:
        learning_rate: Adam learning rate.
        batch_size: Prompts per rollout (one :meth:`PPOTrainer.step`).
        mini_batch_size: Rows per gradient step; must divide ``batch_size``.
        ppo_epochs: Passes over each rollout.
        gamma: Discount.
        lam: GAE lambda.
        cliprange: Policy ratio clip epsilon.
        cliprange_value: Value clip range around the rollout's values.
        vf_coef: Weight of the value loss.
        ent_coef: Weight of an entropy bonus (0: none).
        max_grad_norm: Gradient-norm clip (0: none).
        whiten_advantages: Normalise advantages over the real tokens of the rollout.
        kl_estimator: ``"exact"`` (full-vocabulary KL, >= 0), ``"k1"`` or ``"k3"`` (sampled).
        init_kl_coef: Initial (or fixed) beta.
        adaptive_kl: Use Ziegler et al.'s adaptive controller instead of a fixed beta.
        target_kl: Target per-sequence KL of the adaptive controller.
        kl_horizon: Horizon of the adaptive controller, in sequences.
        max_new_tokens: Response length limit.
        temperature: Sampling temperature (also used for the reference distribution).
        top_k: Top-k filter of the sampling distribution (None: off).
        top_p: Top-p filter of the sampling distribution (None: off).
        detach_value_head: Train the value head on detached hidden states (no value gradient
            into the body), via the model's ``detach_head()``.
        seed: Seed of sampling and minibatch shuffling.
    """

    learning_rate: float = 1e-4
    batch_size: int = 16
    mini_batch_size: int = 4
    ppo_epochs: int = 4
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    ent_coef: float = 0.0
    max_grad_norm: float = 1.0
    whiten_advantages: bool = True
    kl_estimator: str = "exact"
    init_kl_coef: float = 0.1
    adaptive_kl: bool = False
    target_kl: float = 1.0
    kl_horizon: float = 10000.0
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    detach_value_head: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"ppo.kl_estimator={self.kl_estimator!r}: use one of {', '.join(KL_ESTIMATORS)}")
        if self.mini_batch_size < 1 or self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"ppo.mini_batch_size={self.mini_batch_size} must divide ppo.batch_size={self.batch_size}"
            )
        for name in ("learning_rate", "cliprange", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ppo.{name} must be > 0, got {getattr(self, name)}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"ppo.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.ppo_epochs < 1 or self.max_new_tokens < 1:
            raise ValueError("ppo.ppo_epochs and ppo.max_new_tokens must be >= 1")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"ppo.top_k must be >= 0 (0 or null: off), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"ppo.top_p must be in (0, 1] (1 or null: off), got {self.top_p}")
        for name in ("cliprange_value", "vf_coef", "ent_coef", "max_grad_norm", "init_kl_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"ppo.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PPOConfig:
        """Builds a config, naming any unknown key (ValueError)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ppo key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**data)


# ----------------------------------------------------------------------------- rewards and GAE


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """``r_t = -beta * KL_t`` on real tokens, plus the score on each row's last real token.

    Args:
        scores: ``(B,)`` one score per response.
        kl: ``(B, T)`` per-token KL.
        mask: ``(B, T)`` response mask (a prefix of ones per row).
        beta: KL coefficient.

    Returns:
        ``(B, T)`` rewards, 0 after each row's last real token.
    """
    mask = mask.to(kl.dtype)
    rewards = -beta * kl * mask
    last = (mask.sum(1).long() - 1).clamp_min(0)  # (B,) index of the last real token
    has_token = mask.sum(1) > 0
    rewards[torch.arange(len(scores)), last] += torch.where(has_token, scores.to(kl.dtype), 0.0)
    return rewards


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates over each response (Schulman et al. 2016, eq. 16).

    ``delta_t = r_t + gamma V_{t+1} - V_t`` and ``A_t = delta_t + gamma lam A_{t+1}``, with
    ``V = 0`` after the last real token (the episode ends at EOS or at the length limit).

    Args:
        rewards: ``(B, T)`` per-token rewards.
        values: ``(B, T)`` value estimates.
        mask: ``(B, T)`` response mask.

    Returns:
        ``(advantages, returns)``, both ``(B, T)`` and 0 on masked positions; returns = A + V.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(values)
    next_adv = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        advantages[:, t] = next_adv
        next_value = values[:, t]
    returns = (advantages + values) * mask
    return advantages, returns


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    cliprange_value: float,
    vf_coef: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate policy loss plus clipped value loss, token-weighted over real tokens.

    ``L = E[max(-A r, -A clip(r, 1-eps, 1+eps))] + vf_coef * 0.5 E[max((V-R)^2, (V_clip-R)^2)]``
    with ``r = exp(logp - logp_old)`` and ``V_clip = V_old + clip(V - V_old, -c, c)``.

    All tensors are ``(B, T)``. Returns the scalar loss and detached statistics.
    """
    log_ratio = (logprobs - old_logprobs).masked_fill(mask == 0, 0.0)
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses_clipped), mask)

    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses = torch.max((values - returns) ** 2, (values_clipped - returns) ** 2)
    vf_loss = 0.5 * masked_mean(vf_losses, mask)

    loss = pg_loss + vf_coef * vf_loss
    with torch.no_grad():
        stats = {
            "policy_loss": pg_loss.detach(),
            "value_loss": vf_loss.detach(),
            "clip_frac": masked_mean((pg_losses_clipped > pg_losses).float(), mask),
            "value_clip_frac": masked_mean(((values_clipped - returns) ** 2 > (values - returns) ** 2).float(), mask),
            # k3-style estimate of KL(old || new), finite even if a token left the top-k/top-p set
            "approx_kl": masked_mean(torch.nan_to_num(torch.expm1(log_ratio) - log_ratio, posinf=0.0), mask),
        }
    return loss, stats


# ----------------------------------------------------------------------------- trainer


class PPOTrainer(CheckpointMixin):
    """Runs PPO steps on a value-head policy against a frozen reference copy.

    Args:
        policy: A t5lab value-head model (forward returns ``.logits`` and ``.value``).
        config: :class:`PPOConfig`.
        ref_model: Frozen reference LM; default: a deep copy of ``policy`` taken now.
        optimizer: Default: Adam on the policy's trainable parameters.
    """

    def __init__(
        self,
        policy: nn.Module,
        config: PPOConfig,
        ref_model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.policy = policy.eval()  # eval: no dropout, so ratios start at exactly 1
        self.config = config
        self.ref_model = (ref_model if ref_model is not None else copy.deepcopy(policy)).eval()
        self.ref_model.requires_grad_(False)
        if config.detach_value_head:
            if not hasattr(policy, "detach_head"):
                raise ValueError("detach_value_head=True needs a value-head model with detach_head()")
            policy.detach_head()
        self.optimizer = optimizer or torch.optim.Adam(
            [p for p in policy.parameters() if p.requires_grad], lr=config.learning_rate
        )
        if config.adaptive_kl:
            self.kl_ctl: FixedKLController | AdaptiveKLController = AdaptiveKLController(
                config.init_kl_coef, config.target_kl, config.kl_horizon
            )
        else:
            self.kl_ctl = FixedKLController(config.init_kl_coef)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step_count = 0

    # -- sampling ---------------------------------------------------------------------------

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SampleOutput:
        """Samples responses with the config's sampling settings (see :func:`respond_to_batch`)."""
        c = self.config
        return respond_to_batch(
            self.policy.eval(), input_ids, attention_mask, max_new_tokens=c.max_new_tokens,
            temperature=c.temperature, top_k=c.top_k, top_p=c.top_p, generator=self.generator,
        )

    def _policy_forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # (B, T, V) processed log-probs of the sampling distribution and (B, T) values
        c = self.config
        logprobs, values = processed_logprobs(
            self.policy, input_ids, attention_mask, response_ids, c.temperature, c.top_k, c.top_p
        )
        if values is None:
            raise ValueError(
                "the policy returned no values; wrap it in a value-head model (t5lab.models.value_head)"
            )
        return logprobs, values

    # -- one PPO step -------------------------------------------------------------------------

    def step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        sample: SampleOutput,
        scores: torch.Tensor,
    ) -> dict[str, float]:
        """One PPO update from a rollout.

        Args:
            input_ids: ``(B, P)`` right-padded prompts.
            attention_mask: ``(B, P)`` or None.
            sample: The rollout from :meth:`generate` for these prompts.
            scores: ``(B,)`` one reward per response.

        Returns:
            Statistics of the step (floats): ``reward_mean``, ``reward_std``, ``kl``, ``beta``,
            ``entropy``, ``clip_frac``, ``value_loss``, ``policy_loss``, ``response_length``, ...
        """
        c = self.config
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch = input_ids.shape[0]
        if batch != c.batch_size:
            raise ValueError(f"step got {batch} prompts but ppo.batch_size={c.batch_size}")
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        if scores.shape[0] != batch:
            raise ValueError(f"got {scores.shape[0]} scores for {batch} responses")
        if not torch.isfinite(scores).all():
            raise ValueError("the reward function returned a non-finite score")
        response, mask = sample.response_ids, sample.response_mask.float()

        self.policy.eval()
        with torch.no_grad():
            logprobs_full, old_values = self._policy_forward(input_ids, attention_mask, response)
            # reference: same temperature, no truncation (full support, so the KL stays finite)
            ref_logprobs_full = reference_logprobs(self.ref_model, input_ids, attention_mask, response, c.temperature)
            old_logprobs = gather_tokens(logprobs_full, response) * mask  # (B, T)
            kl = kl_per_token(logprobs_full, ref_logprobs_full, response, c.kl_estimator) * mask  # (B, T)
            entropy = entropy_from_logprobs(logprobs_full)  # (B, T)
            beta = self.kl_ctl.value
            rewards = per_token_rewards(scores, kl, mask, beta)
            old_values = old_values * mask
            advantages, returns = compute_gae(rewards, old_values, mask, c.gamma, c.lam)
            # whitening divides the policy-gradient term by the advantages' std; the direct KL term
            # below gets the same factor so that the two keep the weights of the unwhitened objective
            pg_scale = 1.0
            if c.whiten_advantages:
                pg_scale = float(torch.rsqrt(masked_var(advantages, mask) + 1e-8))
                advantages = masked_whiten(advantages, mask)
            rollout_logprob_err = (old_logprobs - sample.logprobs).abs().max()

        stats_sum: dict[str, float] = {}
        n_updates = 0
        for _ in range(c.ppo_epochs):
            order = torch.randperm(batch, generator=self.generator)
            for start in range(0, batch, c.mini_batch_size):
                idx = order[start : start + c.mini_batch_size]
                logprobs_mb, values_mb = self._policy_forward(input_ids[idx], attention_mask[idx], response[idx])
                new_logprobs = gather_tokens(logprobs_mb, response[idx])
                loss, mb_stats = ppo_loss(
                    new_logprobs, old_logprobs[idx], advantages[idx], values_mb, old_values[idx],
                    returns[idx], mask[idx], c.cliprange, c.cliprange_value, c.vf_coef,
                )
                if c.kl_estimator == "exact" and beta > 0:
                    # The exact KL_t is a function of the state s_t, not of the action a_t, so as a
                    # reward it only penalises the actions that led to s_t. Its gradient through
                    # pi(.|s_t) itself is added here analytically (the k1 reward carries that part
                    # in expectation through the score function; see docs/rl.md).
                    kl_direct = masked_mean(exact_kl(logprobs_mb, ref_logprobs_full[idx]), mask[idx])
                    loss = loss + beta * pg_scale * kl_direct
                    mb_stats["kl_loss"] = kl_direct.detach()
                if c.ent_coef:
                    loss = loss - c.ent_coef * masked_mean(entropy_from_logprobs(logprobs_mb), mask[idx])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if c.max_grad_norm:
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                    mb_stats["grad_norm"] = grad_norm.detach()
                self.optimizer.step()
                for key, value in mb_stats.items():
                    stats_sum[key] = stats_sum.get(key, 0.0) + float(value)
                n_updates += 1

        seq_kl = kl.sum(1)  # (B,) KL of each whole response
        self.kl_ctl.update(float(seq_kl.mean()), batch)
        self.step_count += 1
        stats = {key: value / n_updates for key, value in stats_sum.items()}
        stats.update(
            reward_mean=float(scores.mean()),
            reward_std=float(scores.std()) if batch > 1 else 0.0,
            kl=float(seq_kl.mean()),
            kl_per_token=float(masked_mean(kl, mask)),
            beta=beta,
            entropy=float(masked_mean(entropy, mask)),
            response_length=float(mask.sum(1).mean()),
            value_mean=float(masked_mean(old_values, mask)),
            return_mean=float(masked_mean(returns, mask)),
            rollout_logprob_err=float(rollout_logprob_err),
        )
        return stats

    # -- persistence --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, KL controller, RNG and step count (the models are saved separately)."""
        return {**super().state_dict(), "kl_ctl": self.kl_ctl.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.kl_ctl.load_state_dict(state["kl_ctl"])
