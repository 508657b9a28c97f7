"""Sampling from any LM variant through ``generate()`` (KV cache, batching, beam search).

The sampling filters are transformers' own logits processors (``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``), selected by the generation config; top-p is the nucleus
sampling of Holtzman et al. 2019 (arXiv 1904.09751).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from t5lab.errors import T5LabError
from t5lab.explore._common import (
    CLASSIFIER,
    SEQ2SEQ,
    check_context,
    device_of,
    ensure_pad,
    formulation_for,
    model_kind,
)


def generation_config(
    model: Any,
    tokenizer: Any,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_beams: int = 1,
    num_return_sequences: int = 1,
    **overrides: Any,
) -> Any:
    """Build a validated ``GenerationConfig`` from the explorer's sampling arguments.

    ``temperature=0`` means greedy (or plain beam search when ``num_beams > 1``).

    Raises:
        T5LabError: an argument is out of range.
    """
    if max_new_tokens < 1:
        raise T5LabError(f"max_new_tokens={max_new_tokens}: ask for at least 1 new token")
    if temperature < 0:
        raise T5LabError(f"temperature={temperature}: use 0 for greedy or a positive value to sample")
    if top_k is not None and top_k < 1:
        raise T5LabError(f"top_k={top_k}: use a positive integer or None")
    if top_p is not None and not 0 < top_p <= 1:
        raise T5LabError(f"top_p={top_p}: use a value in (0, 1] or None")
    if num_beams < 1:
        raise T5LabError(f"num_beams={num_beams}: use 1 or more")
    do_sample = temperature > 0
    if not do_sample and num_return_sequences > num_beams:
        raise T5LabError(
            f"num_return_sequences={num_return_sequences} > num_beams={num_beams} without sampling; "
            "raise num_beams or set temperature > 0"
        )
    ensure_pad(tokenizer)
    config = copy.deepcopy(model.generation_config)
    config.max_new_tokens = max_new_tokens
    config.max_length = None
    config.do_sample = do_sample
    config.num_beams = num_beams
    config.num_return_sequences = num_return_sequences
    # transformers applies these warpers only when sampling; unset them for greedy to avoid warnings
    config.temperature = float(temperature) if do_sample else None
    config.top_k = top_k if do_sample else None
    config.top_p = top_p if do_sample else None
    config.pad_token_id = tokenizer.pad_token_id
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    config.use_cache = True
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def encode_prompts(model: Any, tokenizer: Any, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Tokenize prompts the way training's formulation makes them (``t5lab.formulation``).

    Seq2seq: ``prompt </s>``, right padding (encoder input). Causal LM: ``prompt </s>`` (the
    ``</s>`` is the input/target separator of t5lab's decoder-only formulation), left padding so
    that new tokens follow every prompt directly; a prefix LM also gets ``prefix_mask`` = the
    prompt, which it reads bidirectionally.
    """
    from t5lab.tasks import Pair

    if model_kind(model) == CLASSIFIER:
        raise T5LabError(f"{type(model).__name__} is a classifier; it has no generate(); use pipeline('text-classification')")
    form = formulation_for(model, tokenizer)
    batch = form.collate_prompts(form.encode_all([Pair(p, "") for p in prompts]))
    return {k: v.to(device_of(model)) for k, v in batch.items()}


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    prompt_or_prompts: str | list[str],
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_beams: int = 1,
    num_return_sequences: int = 1,
    seed: int | None = None,
    **generate_kwargs: Any,
) -> str | list[str] | list[list[str]]:
    """Generate continuations with ``model.generate`` (KV cache on), batched over prompts.

    Works for seq2seq models (``t5``, ``pseudo_dec``: the prompt is the encoder input) and causal
    LMs (``decoder_only``, ``gpt2``: the prompt is left-padded and continued; a prefix LM reads it
    bidirectionally through ``prefix_mask``).

    Args:
        model: a transformers LM (seq2seq or causal).
        tokenizer: its tokenizer.
        prompt_or_prompts: one prompt or a list of prompts.
        max_new_tokens: number of tokens to generate at most.
        temperature: softmax temperature; 0 means greedy decoding.
        top_k: keep only the k most likely tokens before sampling.
        top_p: nucleus sampling: keep the smallest set of tokens whose probability reaches p.
        num_beams: beam search width (1 = no beam search).
        num_return_sequences: continuations per prompt.
        seed: seed for ``torch.manual_seed`` before sampling, for reproducible samples.
        **generate_kwargs: passed to ``GenerationConfig`` (e.g. ``min_new_tokens``).

    Returns:
        For one prompt, its text (or a list of ``num_return_sequences`` texts); for a list of
        prompts, a list with one such entry per prompt.

    Raises:
        T5LabError: bad sampling arguments, a classifier model, or a prompt longer than the context.
    """
    if model_kind(model) == CLASSIFIER:
        raise T5LabError(f"{type(model).__name__} is a classifier; it has no generate(); use pipeline('text-classification')")
    single = isinstance(prompt_or_prompts, str)
    prompts = [prompt_or_prompts] if single else list(prompt_or_prompts)
    if not prompts:
        raise T5LabError("no prompt given; pass a string or a non-empty list of strings")
    config = generation_config(
        model, tokenizer, max_new_tokens, temperature, top_k, top_p, num_beams, num_return_sequences,
        **generate_kwargs,
    )
    enc = encode_prompts(model, tokenizer, prompts)
    kind = model_kind(model)
    prompt_len = int(enc["attention_mask"].sum(-1).max())
    # a causal LM's context holds the prompt and the new tokens; an encoder holds the prompt
    check_context(model, tokenizer, [prompt_len], extra=0 if kind == SEQ2SEQ else max_new_tokens)
    if seed is not None:
        torch.manual_seed(seed)
    out = model.generate(**enc, generation_config=config)  # (B * num_return_sequences, L)
    if kind != SEQ2SEQ:
        out = out[:, enc["input_ids"].shape[1]:]  # keep only the new tokens
    texts = tokenizer.batch_decode(out, skip_special_tokens=True)
    if num_return_sequences > 1:
        texts = [texts[i : i + num_return_sequences] for i in range(0, len(texts), num_return_sequences)]
    return texts[0] if single else texts
