"""RL for T5 variants: exact-log-prob sampling, KL, PPO, GRPO, RLOO, DPO / IPO, pluggable rewards.

Public names are imported lazily (``t5lab ppo --help`` must not import torch):

- :func:`respond_to_batch`, :func:`score_responses`, :func:`forward_responses`,
  :func:`process_logits` (:mod:`t5lab.rl.sampler`)
- :func:`exact_kl`, :func:`kl_per_token`, :class:`AdaptiveKLController`,
  :class:`FixedKLController` (:mod:`t5lab.rl.kl`)
- :class:`PPOConfig`, :class:`PPOTrainer`, :func:`compute_gae` (:mod:`t5lab.rl.ppo`)
- :func:`load_reward`, :class:`ClassifierReward` (:mod:`t5lab.rl.rewards`)
- :class:`GRPOConfig`, :class:`GRPOTrainer`, :class:`RLOOConfig`, :class:`RLOOTrainer`,
  :func:`group_advantages`, :func:`leave_one_out_advantages`, :func:`grpo_loss`, :func:`rloo_loss`
  (:mod:`t5lab.rl.group`)
- :class:`DPOConfig`, :class:`DPOTrainer`, :func:`dpo_loss`, :func:`read_pairs`, :func:`build_pairs`
  (:mod:`t5lab.rl.dpo`)
- :func:`run_ppo`, :func:`load_ppo_config`, :func:`load_policy`, :func:`plot_reward_curve`,
  :func:`plot_comparison` (:mod:`t5lab.rl.run`); :func:`run_rl`, :func:`load_rl_config`,
  :func:`load_lm` (:mod:`t5lab.rl.launch`)
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
    "plot_comparison": "t5lab.rl.run",
    "GRPOConfig": "t5lab.rl.group",
    "GRPOTrainer": "t5lab.rl.group",
    "RLOOConfig": "t5lab.rl.group",
    "RLOOTrainer": "t5lab.rl.group",
    "group_advantages": "t5lab.rl.group",
    "leave_one_out_advantages": "t5lab.rl.group",
    "grpo_loss": "t5lab.rl.group",
    "rloo_loss": "t5lab.rl.group",
    "DPOConfig": "t5lab.rl.dpo",
    "DPOTrainer": "t5lab.rl.dpo",
    "dpo_loss": "t5lab.rl.dpo",
    "read_pairs": "t5lab.rl.dpo",
    "build_pairs": "t5lab.rl.dpo",
    "run_rl": "t5lab.rl.launch",
    "load_rl_config": "t5lab.rl.launch",
    "load_lm": "t5lab.rl.launch",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports("t5lab.rl", _LAZY, globals())
