"""KL penalty between the policy and a frozen reference model, and the KL coefficient controllers.

The penalty enters the PPO reward per token (Ziegler et al. 2019, "Fine-Tuning Language Models from
Human Preferences", https://arxiv.org/abs/1909.08593): ``r_t = -beta * KL_t``, plus the score on
the last response token.

Three per-token estimators of ``KL(pi || ref)`` at a state are available:

- ``"exact"`` (default): ``sum_v pi(v) (log pi(v) - log ref(v))`` over the whole vocabulary, where
  ``pi`` is the distribution the tokens were sampled from (after temperature / top-k / top-p). It is
  a true KL between two distributions, so it is ``>= 0`` by construction (Gibbs' inequality), and
  it has no sampling noise.
- ``"k1"``: ``log pi(a) - log ref(a)`` at the sampled token ``a``. Unbiased, but a single sample
  can be negative, which lets a policy "earn" reward by driving it below zero.
- ``"k3"``: ``(r - 1) - log r`` with ``r = ref(a) / pi(a)``. Unbiased and ``>= 0`` per sample, with
  lower variance than k1 when pi is close to ref. Both sampled estimators are from J. Schulman,
  "Approximating KL Divergence" (2020), http://joschu.net/blog/kl-approx.html.

The reference distribution gets the same temperature as the policy but no top-k / top-p
truncation: a truncated reference would put zero mass on tokens the policy may still sample, which
makes the KL infinite. With a full-support reference every estimator stays finite.
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["exact", "k1", "k3"]
KL_ESTIMATORS: tuple[str, ...] = ("exact", "k1", "k3")


def exact_kl(policy_logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Exact ``KL(pi || ref)`` over the last (vocabulary) dimension.

    Args:
        policy_logprobs: ``(..., V)`` log-probabilities of the policy; ``-inf`` where the processed
            policy gives a token no mass (top-k / top-p), those terms count as 0 (``0 log 0 = 0``).
        ref_logprobs: ``(..., V)`` log-probabilities of the reference, finite wherever the policy
            has mass (the reference must not be truncated more than the policy).

    Returns:
        ``(...,)`` float32 KL values, ``>= 0``.
    """
    p = policy_logprobs.float().exp()
    # where p == 0 the term is 0 whatever log q is; masking before the product avoids 0 * -inf = nan
    diff = (policy_logprobs.float() - ref_logprobs.float()).masked_fill(p == 0, 0.0)
    kl = (p * diff).sum(-1)
    # The exact value is >= 0 (Gibbs); float rounding can give about -1e-7 when pi == ref.
    return kl.clamp_min(0.0)


def sampled_kl(
    policy_logprob: torch.Tensor, ref_logprob: torch.Tensor, estimator: Literal["k1", "k3"]
) -> torch.Tensor:
    """Single-sample KL estimators at the sampled tokens (Schulman's k1 and k3).

    Args:
        policy_logprob: ``(...)`` log pi(a) of the sampled tokens.
        ref_logprob: ``(...)`` log ref(a) of the same tokens.
        estimator: ``"k1"`` (``log pi - log ref``, can be negative) or ``"k3"``
            (``(r - 1) - log r`` with ``r = ref / pi``, always ``>= 0``).

    Returns:
        ``(...)`` float32 estimates.
    """
    log_ratio = policy_logprob.float() - ref_logprob.float()  # log(pi / ref)
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        # r = ref/pi = exp(-log_ratio); (r - 1) - log r, computed with expm1 for accuracy near r = 1
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; use one of {KL_ESTIMATORS}")


def kl_per_token(
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    tokens: torch.Tensor,
    estimator: KLEstimator = "exact",
) -> torch.Tensor:
    """Per-token KL penalty of a batch of responses.

    Args:
        policy_logprobs: ``(B, T, V)`` processed policy log-probabilities (the sampled distribution).
        ref_logprobs: ``(B, T, V)`` reference log-probabilities (same temperature, no truncation).
        tokens: ``(B, T)`` sampled response tokens.
        estimator: ``"exact"``, ``"k1"`` or ``"k3"``.

    Returns:
        ``(B, T)`` float32 KL per token (callers mask positions after EOS).
    """
    if estimator == "exact":
        return exact_kl(policy_logprobs, ref_logprobs)
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; use one of {KL_ESTIMATORS}")
    index = tokens.unsqueeze(-1)  # (B, T, 1)
    lp = policy_logprobs.gather(-1, index).squeeze(-1)  # (B, T)
    lr = ref_logprobs.gather(-1, index).squeeze(-1)  # (B, T)
    return sampled_kl(lp, lr, estimator)  # type: ignore[arg-type]


class FixedKLController:
    """A constant KL coefficient ``beta``."""

    def __init__(self, beta: float) -> None:
        self.value = float(beta)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Keeps ``beta`` unchanged (same signature as :class:`AdaptiveKLController`)."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019 (section 2.2).

    ``e = clip(KL / target - 1, -0.2, 0.2)``; ``beta <- beta * (1 + e * n_steps / horizon)``, where
    ``KL`` is the mean per-sequence KL of the last rollout and ``n_steps`` its number of sequences.
    """

    def __init__(self, init_beta: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got {target=} {horizon=}")
        self.value = float(init_beta)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Moves ``beta`` towards the value that keeps the KL at the target."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
