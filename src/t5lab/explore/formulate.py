"""Batches of a run's split and their evaluation (loss, perplexity, accuracy).

Batches come from ``t5lab.formulation`` (the one place that turns records into model batches per
variant), so the explorer scores exactly what training scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from t5lab.explore._common import CLASSIFIER, device_of, model_kind
from t5lab.explore.scoring import aligned_logits, token_nll


def make_batches(run: Any, records: list, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Collated batches of ``records`` for ``run.model``, built by ``t5lab.formulation``."""
    from t5lab import formulation

    return formulation.explorer_batches(run.config, run.tokenizer, records, batch_size)


@torch.no_grad()
def evaluate_batches(model: Any, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Evaluate batches: token-weighted loss/perplexity/token accuracy for LMs, loss/accuracy for classifiers.

    Returns:
        LMs: ``loss`` (mean NLL per scored token over the whole set), ``ppl`` = exp(loss),
        ``token_acc`` (argmax = label), ``seq_acc`` (every scored token right), ``tokens``.
        Classifiers: ``loss`` (mean over examples), ``accuracy`` (single-label: argmax; multi-label:
        all labels right at threshold 0.5; regression: none) and ``examples``.
    """
    model.eval()
    device = device_of(model)
    if model_kind(model) == CLASSIFIER:
        total, n, correct, scored = 0.0, 0, 0, 0
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            b = batch["labels"].shape[0]
            total += float(out.loss) * b  # the model's loss is a mean over the batch
            n += b
            labels, logits = batch["labels"], out.logits
            if labels.dtype in (torch.long, torch.int) and labels.dim() == 1:
                correct += int((logits.argmax(-1) == labels).sum())
                scored += b
            elif labels.dim() == 2 and logits.shape == labels.shape:
                correct += int(((logits > 0).float() == labels.float()).all(-1).sum())
                scored += b
        result = {"loss": total / n, "examples": float(n)}
        if scored:
            result["accuracy"] = correct / scored
        return result
    total, tokens, right, seqs, seq_right = 0.0, 0, 0, 0, 0
    for batch in batches:
        logits, labels = aligned_logits(model, batch)
        nll, mask = token_nll(model, batch, (logits, labels))
        total += float(nll.double().sum())
        tokens += int(mask.sum())
        pred_ok = logits.argmax(-1) == labels  # (B, T')
        right += int((pred_ok & mask).sum())
        rows = mask.any(-1)
        seqs += int(rows.sum())
        seq_right += int(((pred_ok | ~mask).all(-1) & rows).sum())
    loss = total / max(tokens, 1)
    return {
        "loss": loss,
        "ppl": math.exp(loss) if loss < 700 else math.inf,
        "token_acc": right / max(tokens, 1),
        "seq_acc": seq_right / max(seqs, 1),
        "tokens": float(tokens),
    }
