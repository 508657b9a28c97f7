"""Sampling responses for PPO, and re-scoring them with exactly the distribution they came from.

Why not ``model.generate()``: generate pads finished rows with the pad token and keeps feeding them,
and ``min_length`` sets the EOS logit to ``-inf``; a trainer that then scores the padded tail or the
forced tokens as if they had been sampled lets the policy collect log-probabilities (and KL terms)
for tokens it never drew, which can drive the KL penalty negative. Here every returned token was
drawn by :func:`torch.multinomial` from the processed distribution whose log-probability is
returned, and everything after a row's EOS is masked out (``response_mask == 0``), never scored.

Layouts:

- seq2seq models (T5, pseudo decoder): the encoder input stays right-padded (T5's convention); the
  decoder starts from ``decoder_start_token_id`` and the response is the decoder output.
- causal models (decoder-only T5, GPT-2): the prompt is re-aligned to the left (pads first) so that
  every row continues at the same position with one KV cache; padded positions are masked out of
  attention, and T5's relative position bias only sees differences between positions, which left
  alignment does not change. Models that take ``position_ids`` get them from the attention mask.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from t5lab.compat import CACHE_NAME, cache_kwargs, output_cache


@dataclass
class SampleOutput:
    """What :func:`respond_to_batch` returns.

    Attributes:
        response_ids: ``(B, T)`` sampled tokens; ``pad_token_id`` after a row's EOS.
        response_mask: ``(B, T)`` 1 on sampled tokens up to and including the first EOS, 0 after.
        logprobs: ``(B, T)`` float32 log-probability of each sampled token under the processed
            distribution it was drawn from; 0 where ``response_mask`` is 0.
    """

    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor


def logits_processor(
    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> LogitsProcessorList:
    """The transformers warpers for temperature, then top-k, then top-p (``generate()``'s order).

    Args:
        temperature: Divides the logits; must be > 0.
        top_k: Keep the k most likely tokens (None or 0: keep all).
        top_p: Keep the smallest set of most likely tokens with mass >= top_p (None or 1.0: all).

    Raises:
        ValueError: For a temperature <= 0, a negative top_k or a top_p outside (0, 1].
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; use a small value such as 1e-3 for near-greedy")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 or None disables it), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 or None disables it), got {top_p}")
    procs = LogitsProcessorList()
    if temperature != 1.0:
        procs.append(TemperatureLogitsWarper(float(temperature)))
    if top_k:
        procs.append(TopKLogitsWarper(int(top_k)))
    if top_p is not None and top_p < 1.0:
        procs.append(TopPLogitsWarper(float(top_p)))
    return procs


def process_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Applies temperature / top-k / top-p to logits of any leading shape.

    Args:
        logits: ``(..., V)`` raw logits.

    Returns:
        ``(..., V)`` float32 processed logits, ``-inf`` on filtered tokens; ``log_softmax`` of them is
        the distribution :func:`respond_to_batch` samples from.
    """
    procs = logits_processor(temperature, top_k, top_p)
    flat = logits.float().reshape(-1, logits.shape[-1])  # (N, V): the top-p warper scatters on dim 1
    # The warpers ignore input_ids; an empty placeholder keeps their signature.
    flat = procs(flat.new_zeros(flat.shape[0], 0, dtype=torch.long), flat)
    return flat.reshape(logits.shape)


def _eos_ids(model: nn.Module, eos_token_id: int | list[int] | None) -> torch.Tensor:
    eos = eos_token_id if eos_token_id is not None else model.config.eos_token_id
    if eos is None:
        raise ValueError("the model config has no eos_token_id; pass eos_token_id=...")
    return torch.tensor(eos if isinstance(eos, list | tuple) else [eos])


def _pad_id(model: nn.Module, pad_token_id: int | None) -> int:
    pad = pad_token_id if pad_token_id is not None else model.config.pad_token_id
    return 0 if pad is None else int(pad)


def is_seq2seq(model: nn.Module) -> bool:
    """True for encoder-decoder models (T5, pseudo decoder), False for causal LMs."""
    return bool(getattr(model.config, "is_encoder_decoder", False))


def _accepts(model: nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def _is_prefix_lm(model: nn.Module) -> bool:
    # t5lab's decoder-only T5 trained as a prefix LM sees its prompt bidirectionally
    return bool(getattr(model.config, "prefix_lm", False)) and _accepts(model, "prefix_mask")


def left_align(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves padding to the left, keeping the order of real tokens (for causal-LM prompts).

    Args:
        input_ids: ``(B, P)`` prompts, padded anywhere.
        attention_mask: ``(B, P)`` 1 on real tokens.

    Returns:
        ``(input_ids, attention_mask)`` with every row's real tokens at the end.
    """
    order = torch.argsort(attention_mask.long(), dim=1, stable=True)  # pads (0) first, order kept
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def _check_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        return torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
        )
    if (attention_mask.sum(1) == 0).any():
        raise ValueError("a prompt has no real token (attention_mask all 0); drop empty prompts")
    return attention_mask


def _causal_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # (B, L): 0, 1, 2, ... over real tokens; pads get 0 (they are masked anyway)
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


@torch.no_grad()
def respond_to_batch(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
) -> SampleOutput:
    """Samples one response per prompt with the KV cache.

    Works for transformers' ``T5ForConditionalGeneration``, t5lab's pseudo decoder and decoder-only
    models, and their value-head versions: any model whose forward returns ``.logits`` and takes a
    cache under the installed transformers' name (:mod:`t5lab.compat`: ``cache`` from 5.24,
    ``past_key_values`` on 5.20-5.23). No token is
    forced: a response ends when the model samples EOS, or after ``max_new_tokens`` tokens (then it
    has no EOS).

    Args:
        model: The policy. Its train/eval mode is left as it is (PPO samples in eval mode).
        input_ids: ``(B, P)`` prompts, right-padded.
        attention_mask: ``(B, P)`` 1 on real tokens (default: all 1).
        max_new_tokens: Most tokens to sample per prompt.
        temperature: Softmax temperature (> 0).
        top_k: Keep only the k most likely tokens (None/0: off).
        top_p: Nucleus sampling mass (None/1.0: off).
        generator: Random generator for :func:`torch.multinomial` (reproducible sampling).
        eos_token_id: Token(s) that end a response (default: ``model.config.eos_token_id``).
        pad_token_id: Filler after EOS (default: ``model.config.pad_token_id`` or 0).

    Returns:
        :class:`SampleOutput` with ``(B, T)`` ids, mask and log-probabilities, ``T <= max_new_tokens``.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    procs = logits_processor(temperature, top_k, top_p)
    attention_mask = _check_inputs(input_ids, attention_mask)
    device = input_ids.device
    eos = _eos_ids(model, eos_token_id).to(device)
    pad = _pad_id(model, pad_token_id)
    batch = input_ids.shape[0]
    seq2seq = is_seq2seq(model)

    if seq2seq:
        encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        start = model.config.decoder_start_token_id
        next_input = torch.full((batch, 1), pad if start is None else start, dtype=torch.long, device=device)
        step_kwargs = {"encoder_outputs": encoder_outputs, "attention_mask": attention_mask}
    else:
        ids, mask = left_align(input_ids, attention_mask)
        next_input = ids
        use_positions = _accepts(model, "position_ids")
        use_prefix = _is_prefix_lm(model)
        prompt_mask = mask
        step_kwargs = {}

    tokens, logprobs, masks = [], [], []
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    past = None
    for _ in range(max_new_tokens):
        if seq2seq:
            out = model(decoder_input_ids=next_input, use_cache=True, **cache_kwargs(past), **step_kwargs)
        else:
            kwargs = {"attention_mask": mask}
            if use_positions:
                kwargs["position_ids"] = _causal_position_ids(mask)[:, -next_input.shape[1] :]
            if use_prefix:
                # the prompt is the bidirectional prefix; sampled tokens are causal targets
                kwargs["prefix_mask"] = torch.cat(
                    [prompt_mask, prompt_mask.new_zeros(batch, mask.shape[1] - prompt_mask.shape[1])], dim=1
                )
            out = model(input_ids=next_input, use_cache=True, **cache_kwargs(past), **kwargs)
        past = output_cache(out)
        if past is None:
            # a model that returns no cache would be fed the last token alone: wrong, not slow
            raise ValueError(f"{type(model).__name__} returned no KV cache under {CACHE_NAME!r}; it cannot be sampled")
        scores = procs(next_input, out.logits[:, -1].float())  # (B, V) processed logits
        step_logprobs = torch.log_softmax(scores, dim=-1)  # (B, V)
        token = torch.multinomial(step_logprobs.exp(), 1, generator=generator).squeeze(1)  # (B,)
        alive = ~done
        token = torch.where(alive, token, torch.full_like(token, pad))
        tokens.append(token)
        logprobs.append(torch.where(alive, step_logprobs.gather(1, token[:, None]).squeeze(1), 0.0))
        masks.append(alive.long())
        done = done | (alive & torch.isin(token, eos))
        next_input = token[:, None]
        if not seq2seq:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if done.all():
            break
    return SampleOutput(
        response_ids=torch.stack(tokens, 1), response_mask=torch.stack(masks, 1), logprobs=torch.stack(logprobs, 1)
    )


@dataclass
class ResponseForward:
    """Per-response-token outputs of one teacher-forced forward pass.

    Attributes:
        logits: ``(B, T, V)`` float32 raw logits that predicted each response token.
        values: ``(B, T)`` float32 value estimates of the state before each token (None for models
            without a value head).
    """

    logits: torch.Tensor
    values: torch.Tensor | None


def _values_of(out: object) -> torch.Tensor | None:
    # t5lab's value heads return `value`; `values` (a tensor on custom or older value-head outputs) is
    # the dict method on a plain LM's ModelOutput
    for name in ("value", "values"):
        values = getattr(out, name, None)
        if isinstance(values, torch.Tensor):
            return values
    return None


def forward_responses(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    response_ids: torch.Tensor,
) -> ResponseForward:
    """One teacher-forced pass over prompts + responses (no KV cache), aligned with the responses.

    Args:
        model: A seq2seq or causal LM, with or without a value head (``out.value``).
        input_ids: ``(B, P)`` right-padded prompts, as given to :func:`respond_to_batch`.
        attention_mask: ``(B, P)`` or None.
        response_ids: ``(B, T)`` responses from :func:`respond_to_batch`.

    Returns:
        :class:`ResponseForward`; position ``t`` holds the outputs that predicted token ``t``.
    """
    attention_mask = _check_inputs(input_ids, attention_mask)
    length = response_ids.shape[1]
    if is_seq2seq(model):
        start = model.config.decoder_start_token_id
        start = _pad_id(model, None) if start is None else start
        first = torch.full_like(response_ids[:, :1], start)
        decoder_input_ids = torch.cat([first, response_ids[:, :-1]], dim=1)  # (B, T)
        out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
        logits = out.logits  # (B, T, V)
        values = _values_of(out)
    else:
        ids, mask = left_align(input_ids, attention_mask)
        full_ids = torch.cat([ids, response_ids], dim=1)  # (B, P + T)
        # Tokens after EOS stay visible to attention: causality means they cannot change the
        # outputs at earlier (scored) positions, and masking them would not change those either.
        full_mask = torch.cat([mask, torch.ones_like(response_ids)], dim=1)
        kwargs = {"attention_mask": full_mask}
        if _accepts(model, "position_ids"):
            kwargs["position_ids"] = _causal_position_ids(full_mask)
        if _is_prefix_lm(model):
            kwargs["prefix_mask"] = torch.cat([mask, torch.zeros_like(response_ids)], dim=1)
        out = model(input_ids=full_ids, **kwargs)
        prompt_len = ids.shape[1]
        # the output at position i predicts token i + 1: response token t is predicted at P - 1 + t
        logits = out.logits[:, prompt_len - 1 : prompt_len - 1 + length]
        values = _values_of(out)
        if values is not None:
            values = values[:, prompt_len - 1 : prompt_len - 1 + length]
    return ResponseForward(logits=logits.float(), values=None if values is None else values.float())


def score_responses(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Log-probabilities of given responses under the processed distribution (re-scoring).

    With the sampling settings of :func:`respond_to_batch` this reproduces its ``logprobs``.

    Returns:
        ``(B, T)`` float32 log-probabilities, 0 where ``response_mask`` is 0.
    """
    fwd = forward_responses(model, input_ids, attention_mask, response_ids)
    logprobs = torch.log_softmax(process_logits(fwd.logits, temperature, top_k, top_p), dim=-1)
    token_logprobs = logprobs.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return token_logprobs.masked_fill(response_mask == 0, 0.0)
