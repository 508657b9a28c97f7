"""PPO for T5 variants: sampling with exact log-probs, KL penalty, PPO trainer, pluggable rewards.

Public names are imported lazily (``t5lab ppo --help`` must not import torch):

- :func:`respond_to_batch`, :func:`score_responses`, :func:`forward_responses`,
  :func:`process_logits` (:mod:`t5lab.rl.sampler`)
- :func:`exact_kl`, :func:`kl_per_token`, :class:`AdaptiveKLController`,
  :class:`FixedKLController` (:mod:`t5lab.rl.kl`)
- :class:`PPOConfig`, :class:`PPOTrainer`, :func:`compute_gae` (:mod:`t5lab.rl.ppo`)
- :func:`load_reward`, :class:`ClassifierReward` (:mod:`t5lab.rl.rewards`)
- :func:`run_ppo`, :func:`load_ppo_config`, :func:`load_policy`, :func:`plot_reward_curve`
  (:mod:`t5lab.rl.run`)
"""

from __future__ import annotations

from t5lab._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "SampleOutput": "t5lab.rl.sampler",
    "respond_to_batch": "t5lab.rl.sampler",
    "score_responses": "t5lab.rl.sampler",
    "forward_responses": "t5lab.rl.sampler",
    "process_logits": "t5lab.rl.sampler",
    "exact_kl": "t5lab.rl.kl",
    "sampled_kl": "t5lab.rl.kl",
    "kl_per_token": "t5lab.rl.kl",
    "AdaptiveKLController": "t5lab.rl.kl",
    "FixedKLController": "t5lab.rl.kl",
    "PPOConfig": "t5lab.rl.ppo",
    "PPOTrainer": "t5lab.rl.ppo",
    "compute_gae": "t5lab.rl.ppo",
    "ppo_loss": "t5lab.rl.ppo",
    "load_reward": "t5lab.rl.rewards",
    "ClassifierReward": "t5lab.rl.rewards",
    "run_ppo": "t5lab.rl.run",
    "load_ppo_config": "t5lab.rl.run",
    "load_policy": "t5lab.rl.run",
    "plot_reward_curve": "t5lab.rl.run",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports("t5lab.rl", _LAZY, globals())
