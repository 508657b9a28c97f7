"""Helpers shared by the explorer: what kind of model this is, loading model dirs, tokenizing.

What a model is comes from its :class:`t5lab.variants.Variant` (``variant_of(model)``: its
``config.model_type``); the explorer treats every variant through the contract of
``docs/developing.md``:

- ``seq2seq``: ``config.is_encoder_decoder`` (``t5``, ``pseudo_dec``): encoder input -> decoder labels.
- ``causal``: a causal LM (``decoder_only``, ``gpt2``); a ``decoder_only`` prefix LM also takes
  ``prefix_mask`` (1 on the prompt), so the prompt is read bidirectionally.
- ``classifier``: a sequence classifier (``enct5``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from t5lab.errors import T5LabError
from t5lab.variants import variant_of

SEQ2SEQ, CAUSAL, CLASSIFIER = "seq2seq", "causal", "classifier"


def model_kind(model: Any) -> str:
    """Return ``"seq2seq"``, ``"causal"`` or ``"classifier"`` for a transformers model (its variant's view)."""
    return variant_of(model).model_kind()


def is_prefix_lm(model: Any) -> bool:
    """True when the model takes ``prefix_mask`` (a prefix LM, e.g. ``decoder_only`` with ``prefix_lm``)."""
    return variant_of(model).is_prefix_lm(model)


def context_length(model: Any, tokenizer: Any = None) -> tuple[int | None, bool]:
    """``(limit, hard)``: the longest input the model takes, and whether new tokens count against it.

    Learned absolute positions (GPT-2 ``n_positions``) are a hard limit on prompt + new tokens. T5's
    relative positions have none; a tokenizer's ``model_max_length`` (a run's ``data.max_length``,
    set by :func:`t5lab.load_run`) then limits the prompt alone.
    """
    config = model.config
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value, True
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 1_000_000:
        return value, False
    return None, False


def device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


def load_model_dir(path: str | os.PathLike, attn_implementation: str | None = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from an HF model directory (``save_pretrained`` output).

    The Auto class is chosen from the config: seq2seq LM, causal LM or sequence classifier.

    Raises:
        T5LabError: the directory does not exist or holds no loadable model.
    """
    import transformers

    import t5lab  # noqa: F401  (registers the t5lab variants with the Auto classes)

    path = Path(path)
    if not (path / "config.json").is_file():
        raise T5LabError(f"{path}: no config.json; give a run directory or a save_pretrained model directory")
    auto = variant_of(path).auto_class()
    kwargs: dict[str, Any] = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the explorer's output is its tables, not loading bars
    try:
        model = auto.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise T5LabError(f"{path}: cannot load the model ({str(err).splitlines()[0]})") from err
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    model.eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as err:
        raise T5LabError(f"{path}: no tokenizer saved next to the model; save it with save_pretrained") from err
    return model, tokenizer


def ensure_pad(tokenizer: Any) -> Any:
    """Give tokenizers without a pad token (GPT-2) one: the EOS token, as transformers does."""
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenize(
    tokenizer: Any,
    texts: list[str],
    *,
    padding_side: str = "right",
    add_special_tokens: bool = True,
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenize a batch with padding on ``padding_side``; returns ``input_ids``/``attention_mask`` (B, T)."""
    ensure_pad(tokenizer)
    old = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        enc = tokenizer(list(texts), padding=True, return_tensors="pt", add_special_tokens=add_special_tokens)
    finally:
        tokenizer.padding_side = old
    out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


def formulation_kind(model: Any) -> str:
    """The ``t5lab.formulation`` kind this model is trained with: seq2seq, prefix_lm, causal_lm, classification."""
    return variant_of(model).kind_of(model.config)


def formulation_for(model: Any, tokenizer: Any) -> Any:
    """A :class:`t5lab.formulation.Formulation` for the model, so that prompts and scored texts are
    encoded exactly as training encodes them (decoder-only: ``input </s> target </s>``, the ``</s>``
    after the input being the separator; seq2seq: ``input </s>`` -> ``target </s>``). No truncation:
    over-long inputs are reported by :func:`check_context` instead.
    """
    from t5lab.formulation import Formulation

    ensure_pad(tokenizer)
    if tokenizer.eos_token_id is None:
        raise T5LabError("the tokenizer has no eos token; t5lab formulations end every sequence with one")
    return Formulation(formulation_kind(model), tokenizer, max_length=NO_TRUNCATION)


NO_TRUNCATION = 1 << 40


def check_context(model: Any, tokenizer: Any, lengths: list[int], extra: int = 0) -> None:
    """Raise T5LabError when an input (plus ``extra`` new tokens, for a hard limit) is too long."""
    limit, hard = context_length(model, tokenizer)
    if limit is None:
        return
    longest = max(lengths, default=0)
    extra = extra if hard else 0
    if longest + extra > limit:
        plus = f" + {extra} new tokens" if extra else ""
        raise T5LabError(
            f"prompt of {longest} tokens{plus} is longer than the model's context of {limit} tokens; "
            "shorten the prompt" + (" or ask for fewer new tokens" if extra else "")
        )
