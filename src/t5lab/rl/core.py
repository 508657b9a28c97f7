"""Pieces every RL trainer of t5lab shares: masked statistics, processed log-probs, checkpoints.

PPO (:mod:`t5lab.rl.ppo`), GRPO and RLOO (:mod:`t5lab.rl.group`) and DPO (:mod:`t5lab.rl.dpo`)
all score responses with :func:`processed_logprobs` (the distribution the sampler drew from) and
:func:`reference_logprobs` (same temperature, no truncation, so the KL stays finite), average over
real response tokens only with :func:`masked_mean`, and write checkpoints with
:func:`save_checkpoint` (``model/`` in HF format + ``trainer_state.pt``, renamed into place).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from t5lab.rl.sampler import forward_responses, process_logits

# ----------------------------------------------------------------------------- masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (token-weighted)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of ``x`` over positions where ``mask`` is 1."""
    mean = masked_mean(x, mask)
    n = mask.sum().clamp_min(2.0)
    return (((x - mean) ** 2) * mask).sum() / (n - 1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """``(x - mean) / std`` over the masked positions; masked-out positions become 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def entropy_from_logprobs(logprobs: torch.Tensor) -> torch.Tensor:
    """``-sum p log p`` over the last dimension, with ``0 log 0 = 0`` (``-inf`` log-probs allowed)."""
    p = logprobs.exp()
    return -(p * logprobs.masked_fill(p == 0, 0.0)).sum(-1)


def gather_tokens(logprobs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``(B, T, V)`` log-probs at ``(B, T)`` tokens -> ``(B, T)``."""
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


# ----------------------------------------------------------------------------- scoring


def processed_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    response_ids: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(B, T, V)`` log-probs of the processed sampling distribution, and the values (or None)."""
    fwd = forward_responses(model, input_ids, attention_mask, response_ids)
    logprobs = torch.log_softmax(process_logits(fwd.logits, temperature, top_k, top_p), dim=-1)
    return logprobs, fwd.values


def reference_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    response_ids: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``(B, T, V)`` reference log-probs: the policy's temperature, no top-k / top-p (full support)."""
    logits = forward_responses(model, input_ids, attention_mask, response_ids).logits
    return torch.log_softmax(logits / temperature, dim=-1)


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(directory: str | os.PathLike, policy: nn.Module, state: dict[str, Any], tokenizer: Any = None) -> Path:
    """Writes ``model/`` (HF format) and ``trainer_state.pt`` to ``directory`` atomically.

    The directory is first written under a temporary name and then renamed into place, so an
    interrupted save never leaves a half-written checkpoint.
    """
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    policy.save_pretrained(tmp / "model")
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "model")
    torch.save(state, tmp / "trainer_state.pt")
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old.exists():
        shutil.rmtree(old)
    return directory


def load_checkpoint(directory: str | os.PathLike, policy: nn.Module) -> dict[str, Any]:
    """Restores the policy weights written by :func:`save_checkpoint`; returns the trainer state.

    Raises:
        ValueError: No weights there, or weights that do not fit the policy.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    weights = sorted((directory / "model").glob("*.safetensors"))
    if not weights:
        raise ValueError(f"{directory}/model has no .safetensors weights; is it an RL checkpoint?")
    state: dict[str, torch.Tensor] = {}
    for file in weights:
        state.update(load_file(file))
    missing, unexpected = policy.load_state_dict(state, strict=False)
    # save_pretrained stores tied tensors (lm_head = shared embedding) once; a missing key is fine
    # when its tensor is shared with a loaded one
    own = policy.state_dict()
    loaded_ptrs = {own[k].data_ptr() for k in state if k in own}
    missing = [k for k in missing if own[k].data_ptr() not in loaded_ptrs]
    if missing or unexpected:
        raise ValueError(f"checkpoint {directory} does not match the policy: {missing=} {unexpected=}")
    return torch.load(directory / "trainer_state.pt", weights_only=True)


class CheckpointMixin:
    """``state_dict`` / ``save`` / ``load`` of a trainer with ``policy``, ``optimizer``,
    ``generator`` (sampling / shuffling RNG), ``step_count`` and a dataclass ``config``."""

    policy: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step_count: int
    config: Any

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, RNG and step count (the models are saved separately)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "step_count": self.step_count,
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step_count = int(state["step_count"])

    def save(self, directory: str | os.PathLike, tokenizer: Any = None) -> Path:
        """Writes ``model/`` (HF format, a value head included) and ``trainer_state.pt`` atomically."""
        return save_checkpoint(directory, self.policy, self.state_dict(), tokenizer)

    def load(self, directory: str | os.PathLike) -> None:
        """Restores policy weights and trainer state written by :meth:`save`."""
        self.load_state_dict(load_checkpoint(directory, self.policy))
