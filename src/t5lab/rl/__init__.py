"""PPO for T5 variants: sampling, KL penalty, PPO trainer and pluggable rewards."""
