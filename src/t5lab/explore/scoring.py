"""Perplexity (token-weighted, padding excluded) and per-layer hidden states for any variant."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from t5lab.errors import T5LabError
from t5lab.explore._common import CLASSIFIER, SEQ2SEQ, device_of, formulation_for, model_kind, tokenize

IGNORE = -100


@dataclass
class Perplexity:
    """Perplexity over a whole set of texts.

    Attributes:
        mean: ``exp(total NLL / total tokens)``: token-weighted over the set, padding excluded.
        max: the largest per-sequence perplexity.
        min: the smallest per-sequence perplexity.
        tokens: number of scored tokens.
        loss: mean NLL per token (natural log), ``log(mean)``.
        per_token: per sequence, a 1-D tensor of the NLL of each scored token (``per_token=True``).
    """

    mean: float
    max: float
    min: float
    tokens: int
    loss: float
    per_token: list[torch.Tensor] | None = field(default=None, repr=False)


def _as_pair(item: Any) -> tuple[str, str]:
    if isinstance(item, str):
        return "", item
    if hasattr(item, "input") and hasattr(item, "target"):
        return item.input, item.target
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return str(item[0]), str(item[1])
    raise T5LabError(f"cannot score {type(item).__name__}; give texts, (input, target) pairs or batches")


def text_batches(model: Any, tokenizer: Any, items: list[Any], batch_size: int) -> Iterable[dict]:
    """Turn texts or (input, target) pairs into model batches, as training's formulation does.

    Seq2seq: ``input </s>`` to the encoder, ``target </s>`` scored. Causal LM:
    ``input </s> target </s>`` with only ``target </s>`` scored (a bare text is a target with an
    empty input, so its sequence starts with ``</s>`` as BOS); a prefix LM gets ``prefix_mask``
    over ``input </s>``. Labels are -100 where not scored and not shifted.
    """
    from t5lab.tasks import Pair

    if model_kind(model) == CLASSIFIER:
        raise T5LabError(f"{type(model).__name__} is a classifier; perplexity needs a language model")
    form = formulation_for(model, tokenizer)
    examples = form.encode_all([Pair(*_as_pair(item)) for item in items])
    device = device_of(model)
    for start in range(0, len(examples), batch_size):
        batch = form.collate(examples[start : start + batch_size])
        yield {k: v.to(device) for k, v in batch.items()}


def aligned_logits(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the labels they predict, aligned: ``(logits (B, T', V), labels (B, T'))``.

    Seq2seq: the decoder is fed the labels shifted right (the model's own ``_shift_right``).
    Causal LM: labels are not pre-shifted (HF convention), so position t predicts label t + 1 and
    T' = T - 1.
    """
    kind = model_kind(model)
    if kind == CLASSIFIER:
        raise T5LabError(f"{type(model).__name__} is a classifier; perplexity needs a language model")
    device = device_of(model)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "prefix_mask")}
    if kind == SEQ2SEQ:
        return model(**inputs, labels=labels).logits, labels  # (B, T, V), (B, T)
    return model(**inputs).logits[:, :-1], labels[:, 1:]  # (B, T-1, V), (B, T-1)


def token_nll(
    model: Any, batch: Mapping[str, torch.Tensor], logits_and_labels: tuple | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood of ``batch["labels"]``.

    Returns:
        ``(nll, mask)``, both (B, T'): the NLL of each label token (0 where not scored) and a bool
        mask of the scored tokens (label != -100), aligned as in :func:`aligned_logits`.
    """
    logits, labels = logits_and_labels or aligned_logits(model, batch)
    mask = labels != IGNORE
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.clamp_min(0).reshape(-1), reduction="none"
    ).view(labels.shape)
    return nll * mask, mask


def _unwrap(batch: Mapping[str, Any]) -> Mapping[str, Any]:
    """A model batch from a t5lab evaluation batch ``{"index", "batch", ...}`` (rows with index -1 are padding)."""
    inner = batch.get("batch") if isinstance(batch, Mapping) else None
    if not isinstance(inner, Mapping):
        return batch
    index = batch.get("index")
    if torch.is_tensor(index) and bool((index < 0).any()):
        return {k: v[index >= 0] for k, v in inner.items()}
    return inner


@torch.no_grad()
def perplexity(
    model: Any,
    tokenizer: Any,
    texts_or_dataloader: Any,
    per_token: bool = False,
    batch_size: int = 16,
) -> Perplexity:
    """Perplexity of an LM over texts, (input, target) pairs, or a dataloader of batches.

    The mean is token-weighted over the whole set: ``exp(sum of token NLLs / number of tokens)``,
    not a mean of batch means; padding and ``-100`` labels are excluded.

    Args:
        model: a seq2seq or causal transformers LM.
        tokenizer: its tokenizer (unused for a dataloader).
        texts_or_dataloader: a string, a list of strings / pairs / ``Pair`` records, or an iterable
            of batches with ``input_ids``, ``attention_mask``, ``labels`` (and ``prefix_mask``) as
            ``t5lab.formulation`` builds them.
        per_token: also return the NLL of each scored token, per sequence.
        batch_size: batch size for texts.

    Returns:
        A :class:`Perplexity`.
    """
    data = texts_or_dataloader
    if isinstance(data, str):
        data = [data]
    if isinstance(data, list) and (not data or not isinstance(data[0], Mapping)):
        if not data:
            raise T5LabError("no texts to score; pass at least one text")
        batches: Iterable = text_batches(model, tokenizer, data, batch_size)
    else:
        batches = data
    was_training = model.training
    model.eval()
    total, count, seq_ppl, values = 0.0, 0, [], []
    try:
        for batch in batches:
            batch = _unwrap(batch)
            nll, mask = token_nll(model, batch)
            total += float(nll.double().sum())
            count += int(mask.sum())
            lengths = mask.sum(-1)
            for i in range(nll.shape[0]):
                if lengths[i] > 0:
                    seq_ppl.append(math.exp(float(nll[i].double().sum()) / int(lengths[i])))
                    if per_token:
                        values.append(nll[i][mask[i]].cpu())
    finally:
        model.train(was_training)
    if count == 0:
        raise T5LabError("no tokens to score (every label is padding); check the data")
    loss = total / count
    return Perplexity(
        mean=math.exp(loss), max=max(seq_ppl), min=min(seq_ppl), tokens=count, loss=loss,
        per_token=values if per_token else None,
    )


@dataclass
class HiddenStates:
    """Per-layer hidden states of a batch of texts.

    Attributes:
        encoder: embeddings + one tensor per encoder layer, each (B, T, D); None for causal LMs.
        decoder: embeddings + one per decoder layer, each (B, S, D); None when no decoder ran.
        encoder_mask: (B, T) 1 on real tokens, 0 on padding.
        decoder_mask: (B, S) idem for the decoder input.
        tokens: the tokens of each text (without padding).
    """

    encoder: tuple[torch.Tensor, ...] | None
    decoder: tuple[torch.Tensor, ...] | None
    encoder_mask: torch.Tensor | None
    decoder_mask: torch.Tensor | None
    tokens: list[list[str]]


@torch.no_grad()
def hidden_states(
    model: Any, tokenizer: Any, texts: str | list[str], targets: str | list[str] | None = None
) -> HiddenStates:
    """Hidden states after the embeddings and after every layer, with the padding mask.

    Seq2seq and classifier models encode ``texts``; the decoder runs on ``targets`` (teacher
    forced) when given, otherwise on the decoder start token alone. Causal LMs run on ``texts``.
    Note the last entry is after the final layer norm in T5 (transformers' convention).
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    kind = model_kind(model)
    device = device_of(model)
    if kind == "causal":
        from t5lab.explore.generation import encode_prompts

        enc = encode_prompts(model, tokenizer, texts)  # `text </s>`, left-padded; prefix_mask for a prefix LM
        out = model(**enc, output_hidden_states=True)
        tokens = [tokenizer.convert_ids_to_tokens(ids[m.bool()]) for ids, m in zip(enc["input_ids"], enc["attention_mask"])]
        return HiddenStates(None, tuple(out.hidden_states), None, enc["attention_mask"], tokens)
    enc = tokenize(tokenizer, texts, device=device)
    kwargs: dict[str, Any] = {}
    dec_mask = None
    if getattr(model.config, "is_encoder_decoder", False):
        if targets is not None:
            targets = [targets] if isinstance(targets, str) else list(targets)
            tgt = tokenize(tokenizer, targets, device=device)
            dec_in = model._shift_right(tgt["input_ids"])  # (B, S) T5's own shift: start token first
            dec_mask = tgt["attention_mask"]
        else:
            start = model.config.decoder_start_token_id or 0
            dec_in = torch.full((len(texts), 1), start, dtype=torch.long, device=device)
            dec_mask = torch.ones_like(dec_in)
        kwargs = {"decoder_input_ids": dec_in, "decoder_attention_mask": dec_mask}
    out = model(**enc, **kwargs, output_hidden_states=True)
    tokens = [tokenizer.convert_ids_to_tokens(ids[m.bool()]) for ids, m in zip(enc["input_ids"], enc["attention_mask"])]
    encoder = getattr(out, "encoder_hidden_states", None) or getattr(out, "hidden_states", None)
    decoder = getattr(out, "decoder_hidden_states", None)
    return HiddenStates(
        tuple(encoder) if encoder is not None else None,
        tuple(decoder) if decoder is not None else None,
        enc["attention_mask"], dec_mask, tokens,
    )
