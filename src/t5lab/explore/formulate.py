"""Batches of a run's split and their evaluation (loss, perplexity, accuracy).

Batches and losses come from ``t5lab.formulation`` (the one place that turns records into model
batches per variant, and the loss sums training uses), so the explorer recomputes exactly what
training logged: split metrics are sums over the whole split divided at the end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from t5lab.explore._common import device_of, formulation_kind


def run_formulation(run: Any) -> Any:
    """The run's :class:`~t5lab.formulation.Formulation`, from its config (as training built it)."""
    from t5lab.formulation import Formulation
    from t5lab.plan import resolve

    return Formulation.from_plan(resolve(run.config), run.tokenizer)


def make_batches(run: Any, records: list, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Collated batches of ``records`` for ``run.model``, encoded by the run's formulation."""
    form = run_formulation(run)
    examples = form.encode_all(records)
    return [form.collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]


@torch.no_grad()
def evaluate_batches(
    model: Any, batches: Iterable[dict[str, torch.Tensor]], kind: str | None = None, problem_type: str | None = None
) -> dict[str, float]:
    """Evaluate batches with training's loss sums (``t5lab.formulation.token_loss`` / ``classification_loss``).

    Args:
        model: the model.
        batches: collated batches (``Formulation.collate``).
        kind: formulation kind (default: from the model).
        problem_type: classification problem type (default: from ``model.config.problem_type``).

    Returns:
        LMs: ``loss`` (mean NLL per target token over the whole set), ``ppl`` = exp(loss),
        ``token_acc`` (teacher-forced argmax), ``tokens``. Classifiers: ``loss`` (mean per
        example), ``accuracy`` (not for regression), ``examples``.
    """
    from t5lab.formulation import classification_loss, token_loss

    kind = kind or formulation_kind(model)
    if kind == "classification" and problem_type is None:
        problem_type = getattr(model.config, "problem_type", None)
    was_training = model.training
    model.eval()
    device = device_of(model)
    loss_sum, n, correct = 0.0, 0, 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**batch).logits
            if kind == "classification":
                terms = classification_loss(logits, batch["labels"], problem_type)
            else:
                terms = token_loss(kind, logits, batch["labels"])
            loss_sum += float(terms[0])
            n += int(terms[1])
            correct += int(terms[2])
    finally:
        model.train(was_training)
    loss = loss_sum / max(n, 1)
    if kind == "classification":
        result = {"loss": loss, "examples": float(n)}
        if problem_type != "regression":
            result["accuracy"] = correct / max(n, 1)
        return result
    return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "token_acc": correct / max(n, 1), "tokens": float(n)}


@torch.no_grad()
def exact_match_rate(run: Any, records: list, batch_size: int) -> float:
    """Share of records whose greedy decoding equals the reference up to and including its ``</s>``.

    Prompts and references come from the run's formulation, decoding is greedy with the KV cache
    for at most ``train.max_new_tokens`` (else the batch's longest reference) new tokens, as in
    training's ``val_exact_match``.
    """
    from t5lab.explore.generation import generation_config
    from t5lab.variants import variant_of

    model, tokenizer = run.model, run.tokenizer
    form = run_formulation(run)
    examples = form.encode_all(records)
    eos = tokenizer.eos_token_id
    right = 0
    variant = variant_of(model)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        prompts = {k: v.to(device_of(model)) for k, v in form.collate_prompts(chunk).items()}
        limit = run.config.train.max_new_tokens or max(len(e.target) for e in chunk)
        out = model.generate(**prompts, generation_config=generation_config(model, tokenizer, limit, temperature=0))
        new = variant.new_tokens(out, prompts["input_ids"].shape[1])
        for hyp, example in zip(new.tolist(), chunk):
            hyp = hyp[: hyp.index(eos) + 1] if eos in hyp else hyp
            right += hyp == list(example.target)
    return right / max(len(examples), 1)
