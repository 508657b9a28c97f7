"""DPO and IPO from preference pairs, for every generator variant (seq2seq or causal).

- **DPO** (Rafailov et al. 2023, "Direct Preference Optimization", https://arxiv.org/abs/2305.18290,
  eq. 7): with ``h = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))``,
  ``L = -log sigmoid(beta h)``; ``dL/dh = -beta sigmoid(-beta h)``.
- **IPO** (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
  Preferences", https://arxiv.org/abs/2310.12036, eq. 17): ``L = (h - 1 / (2 tau))^2`` with
  ``tau = beta``; ``dL/dh = 2 (h - 1 / (2 beta))``. It regresses the margin to a finite target
  instead of pushing it to infinity.

``length_normalize=True`` uses the mean log-probability per response token instead of the sum
(``h`` of per-token averages; SimPO-style length normalisation, and what TRL's IPO does). The
implicit reward of a response is ``beta (log pi - log ref)``; the metrics are its mean for chosen
and rejected responses, their margin and the accuracy (fraction of pairs whose chosen response gets
the higher implicit reward). Sequence log-probabilities count real tokens only: the response is
``text </s>``, and padding after it is masked out.

:func:`build_pairs` makes a preference file from a task: sample ``k`` responses per prompt from a
generator, score them with a reward, and pair the best with the worst (prompts whose samples all
score the same give no pair).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from t5lab.errors import T5LabError
from t5lab.rl.core import CheckpointMixin
from t5lab.rl.sampler import score_responses

DPO_LOSSES = ("sigmoid", "ipo")
PAIR_FIELDS = ("prompt", "chosen", "rejected")


@dataclass
class DPOConfig:
    """DPO / IPO settings.

    Attributes:
        loss_type: ``"sigmoid"`` (DPO) or ``"ipo"``.
        beta: DPO's beta (IPO's tau).
        length_normalize: Mean log-prob per token instead of the sum.
        learning_rate: Adam learning rate.
        batch_size: Pairs per step.
        max_grad_norm: Gradient-norm clip (0: none).
        max_length: Most response tokens (EOS included; longer responses are cut).
        seed: Seed of the pair order.
    """

    loss_type: str = "sigmoid"
    beta: float = 0.1
    length_normalize: bool = False
    learning_rate: float = 1e-4
    batch_size: int = 8
    max_grad_norm: float = 1.0
    max_length: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss_type not in DPO_LOSSES:
            raise ValueError(f"dpo.loss_type={self.loss_type!r}: use one of {', '.join(DPO_LOSSES)}")
        for name in ("beta", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"dpo.{name} must be > 0, got {getattr(self, name)}")
        if self.batch_size < 1 or self.max_length < 1:
            raise ValueError("dpo.batch_size and dpo.max_length must be >= 1")
        if self.max_grad_norm < 0:
            raise ValueError(f"dpo.max_grad_norm must be >= 0, got {self.max_grad_norm}")


# ----------------------------------------------------------------------------- losses


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DPO or IPO loss of ``(B,)`` sequence log-probs, and the implicit-reward statistics.

    Returns:
        The mean loss and ``reward_chosen``, ``reward_rejected``, ``reward_margin``,
        ``reward_accuracy`` (detached means over the batch).
    """
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)  # (B,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; use one of {DPO_LOSSES}")
    with torch.no_grad():
        chosen = beta * (policy_chosen - ref_chosen)
        rejected = beta * (policy_rejected - ref_rejected)
        stats = {
            "reward_chosen": chosen.mean(),
            "reward_rejected": rejected.mean(),
            "reward_margin": (chosen - rejected).mean(),
            "reward_accuracy": (chosen > rejected).float().mean(),
        }
    return losses.mean(), stats


# ----------------------------------------------------------------------------- data


def read_pairs(path: str | os.PathLike) -> list[dict[str, str]]:
    """Reads a JSONL preference file: one ``{"prompt", "chosen", "rejected"}`` object a line.

    Raises:
        T5LabError: Missing file, bad JSON, a missing / non-string / empty field, or no pairs.
    """
    path = Path(path)
    if not path.is_file():
        raise T5LabError(f"pairs file {path} not found; give a JSONL file with prompt, chosen, rejected")
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise T5LabError(f"{path} line {n}: not JSON ({err.msg}); write one object a line") from None
        if not isinstance(row, dict):
            raise T5LabError(f"{path} line {n}: expected an object with {', '.join(PAIR_FIELDS)}")
        for key in PAIR_FIELDS:
            if key not in row:
                raise T5LabError(f"{path} line {n}: missing field {key!r}; each line needs {', '.join(PAIR_FIELDS)}")
            if not isinstance(row[key], str):
                raise T5LabError(f"{path} line {n}: field {key!r} must be a string, got {type(row[key]).__name__}")
        if not row["prompt"].strip():
            raise T5LabError(f"{path} line {n}: empty prompt; drop the line or give a prompt")
        pairs.append({k: row[k] for k in PAIR_FIELDS})
    if not pairs:
        raise T5LabError(f"pairs file {path} holds no pairs")
    return pairs


def write_pairs(pairs: list[dict[str, str]], path: str | os.PathLike) -> Path:
    """Writes pairs as JSONL (atomically)."""
    from t5lab.train.io import atomic_write_text

    atomic_write_text(Path(path), "".join(json.dumps({k: p[k] for k in PAIR_FIELDS}) + "\n" for p in pairs))
    return Path(path)


def encode_responses(tokenizer: Any, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(ids, mask)`` of responses as the sampler produces them: ``text </s>``."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 1
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][: max_length - 1] + [eos] for t in texts]
    width = max(len(x) for x in ids)
    return (
        torch.tensor([x + [pad] * (width - len(x)) for x in ids]),
        torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
    )


@dataclass
class PairBatch:
    """Encoded pairs: ``(B, P)`` prompts and ``(B, T)`` chosen / rejected responses with masks."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    chosen: torch.Tensor
    chosen_mask: torch.Tensor
    rejected: torch.Tensor
    rejected_mask: torch.Tensor

    @classmethod
    def encode(cls, tokenizer: Any, pairs: list[dict[str, str]], prompt_length: int, max_length: int) -> PairBatch:
        from t5lab.rl.run import encode_prompts

        ids, mask = encode_prompts(tokenizer, [p["prompt"] for p in pairs], prompt_length)
        c, cm = encode_responses(tokenizer, [p["chosen"] for p in pairs], max_length)
        r, rm = encode_responses(tokenizer, [p["rejected"] for p in pairs], max_length)
        return cls(ids, mask, c, cm, r, rm)


def sequence_logprobs(
    model: nn.Module, batch: PairBatch, length_normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B,)`` log-probs of the chosen and of the rejected responses, in one forward pass.

    Sums over real tokens (means with ``length_normalize``); padding never counts.
    """
    width = max(batch.chosen.shape[1], batch.rejected.shape[1])

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, width - x.shape[1]))

    ids = torch.cat([batch.input_ids, batch.input_ids])
    mask = torch.cat([batch.attention_mask, batch.attention_mask])
    resp = torch.cat([pad(batch.chosen), pad(batch.rejected)])
    resp_mask = torch.cat([pad(batch.chosen_mask), pad(batch.rejected_mask)])
    token_logprobs = score_responses(model, ids, mask, resp, resp_mask)  # (2B, T), 0 on padding
    seq = token_logprobs.sum(1)
    if length_normalize:
        seq = seq / resp_mask.sum(1)
    n = batch.input_ids.shape[0]
    return seq[:n], seq[n:]


# ----------------------------------------------------------------------------- trainer


class DPOTrainer(CheckpointMixin):
    """DPO / IPO updates of a policy; the reference enters only through cached log-probs.

    Args:
        policy: A seq2seq or causal LM (t5, pseudo_dec, decoder_only, gpt2).
        config: :class:`DPOConfig`.
    """

    def __init__(self, policy: nn.Module, config: DPOConfig, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.policy = policy.eval()  # no dropout: the first step's policy log-probs equal the reference's
        self.config = config
        self.optimizer = optimizer or torch.optim.Adam(
            [p for p in policy.parameters() if p.requires_grad], lr=config.learning_rate
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step_count = 0

    @torch.no_grad()
    def reference_logprobs(self, ref_model: nn.Module, batch: PairBatch) -> torch.Tensor:
        """``(B, 2)`` reference log-probs (chosen, rejected) as **sums** (normalised later if asked)."""
        chosen, rejected = sequence_logprobs(ref_model.eval(), batch, length_normalize=False)
        return torch.stack([chosen, rejected], 1)

    def step(self, batch: PairBatch, ref_logprobs: torch.Tensor) -> dict[str, float]:
        """One gradient step on a batch of pairs with their ``(B, 2)`` cached reference sums."""
        c = self.config
        ref_c, ref_r = ref_logprobs[:, 0].float(), ref_logprobs[:, 1].float()
        if c.length_normalize:
            ref_c = ref_c / batch.chosen_mask.sum(1)
            ref_r = ref_r / batch.rejected_mask.sum(1)
        self.policy.eval()
        chosen, rejected = sequence_logprobs(self.policy, batch, c.length_normalize)
        loss, stats = dpo_loss(chosen, rejected, ref_c, ref_r, c.beta, c.loss_type)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        out = {"loss": float(loss.detach()), **{k: float(v) for k, v in stats.items()}}
        if c.max_grad_norm:
            out["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm))
        self.optimizer.step()
        self.step_count += 1
        out.update(logp_chosen=float(chosen.detach().mean()), logp_rejected=float(rejected.detach().mean()))
        return out


# ----------------------------------------------------------------------------- pairs from a task


@torch.no_grad()
def build_pairs(
    policy: nn.Module,
    tokenizer: Any,
    prompts: list[str],
    targets: list[str] | None,
    reward: Any,
    k: int = 4,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    prompt_length: int = 32,
    seed: int = 0,
    batch_size: int = 16,
) -> list[dict[str, str]]:
    """Preference pairs from a generator: per prompt, the best and the worst of ``k`` samples.

    Prompts whose ``k`` samples score alike give no pair. Deterministic for a seed.
    """
    from t5lab.rl.rewards import compute_scores
    from t5lab.rl.run import decode_responses, encode_prompts
    from t5lab.rl.sampler import respond_to_batch

    if k < 2:
        raise T5LabError(f"pairs.k={k}: a pair needs >= 2 samples per prompt")
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for start in range(0, len(prompts), batch_size):
        texts = prompts[start : start + batch_size]
        ids, mask = encode_prompts(tokenizer, texts, prompt_length)
        out = respond_to_batch(policy.eval(), ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0),
                               max_new_tokens=max_new_tokens, temperature=temperature, generator=gen)
        responses = decode_responses(tokenizer, out.response_ids, out.response_mask)
        rep_texts = [t for t in texts for _ in range(k)]
        rep_targets = [t for t in targets[start : start + batch_size] for _ in range(k)] if targets else None
        scores = compute_scores(reward, rep_texts, responses, rep_targets).reshape(-1, k)
        for i, text in enumerate(texts):
            best, worst = int(scores[i].argmax()), int(scores[i].argmin())
            if scores[i, best] > scores[i, worst]:
                pairs.append({"prompt": text, "chosen": responses[i * k + best], "rejected": responses[i * k + worst]})
    return pairs
