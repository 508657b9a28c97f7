"""Attention-head ablation (a context manager) and physical pruning, for transformers 5.

transformers 5 removed ``head_mask`` and ``prune_heads``. Here:

- :func:`ablate_heads` zeros chosen heads' outputs with a forward pre-hook on the attention output
  projection (T5 ``o``, GPT-2 ``c_proj``): the input of that projection is the concatenation of the
  heads' outputs, (B, T, H * D), so zeroing a D-slice removes exactly that head's contribution
  (Michel et al. 2019, "Are Sixteen Heads Really Better than One?", arXiv 1905.10650).
- :func:`prune_heads` removes the heads from T5 self-attention: rows of q/k/v, columns of o, and
  ``n_heads``/``inner_dim``. T5 computes the relative position bias once, in layer 0 of a stack, as
  (1, H, Tq, Tk), and shares it with every later layer of that stack. So each pruned layer selects
  its own kept heads out of the shared bias (a forward pre-hook), and the columns of layer 0's
  ``relative_attention_bias`` (and the decoder-only model's ``prefix_forward_bias``) are removed
  for the heads that no layer of the stack uses any more.

Layers are named ``"encoder.N"`` / ``"decoder.N"`` (self-attention of block N; the stack is
``decoder`` for causal LMs) and ``"decoder.N.cross"`` (cross-attention, ablation only).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from t5lab.compat import passed_cache
from t5lab.errors import T5LabError
from t5lab.explore._common import CAUSAL, model_kind

_T5_SITE = re.compile(r"(?:^|\.)(\w+)\.block\.(\d+)\.layer\.\d+\.(SelfAttention|EncDecAttention)$")
_GPT2_SITE = re.compile(r"(?:^|\.)h\.(\d+)\.attn$")


@dataclass
class AttentionSite:
    """One attention module of a model, addressed as ``"encoder.0"``, ``"decoder.1.cross"``, ..."""

    name: str
    stack: str
    layer: int
    cross: bool
    module: nn.Module
    out_proj: nn.Module  # its output projection, whose input is the concatenated heads
    n_heads: int
    head_dim: int
    original_heads: int  # heads before any pruning; head indices always refer to these


def attention_sites(model: nn.Module) -> dict[str, AttentionSite]:
    """All attention modules of a T5-family or GPT-2 model, by explorer name."""
    causal = model_kind(model) == CAUSAL  # one stack: call it "decoder" whatever its attribute name
    sites: dict[str, AttentionSite] = {}
    for qualname, module in model.named_modules():
        m = _T5_SITE.search(qualname)
        if m and hasattr(module, "o") and hasattr(module, "n_heads"):
            stack, layer, kind = m.group(1), int(m.group(2)), m.group(3)
            if causal or stack not in ("encoder", "decoder"):
                stack = "decoder" if causal else stack
            cross = kind == "EncDecAttention"
            name = f"{stack}.{layer}" + (".cross" if cross else "")
            original = len(getattr(module, "_t5lab_kept", range(module.n_heads))) + len(
                getattr(module, "_t5lab_pruned", ())
            )
            sites[name] = AttentionSite(
                name, stack, layer, cross, module, module.o, module.n_heads, module.key_value_proj_dim, original
            )
            continue
        m = _GPT2_SITE.search(qualname)
        if m and hasattr(module, "c_proj") and hasattr(module, "num_heads"):
            layer = int(m.group(1))
            sites[f"decoder.{layer}"] = AttentionSite(
                f"decoder.{layer}", "decoder", layer, False, module, module.c_proj,
                module.num_heads, module.head_dim, module.num_heads,
            )
    if not sites:
        raise T5LabError(f"{type(model).__name__}: found no T5 or GPT-2 attention modules to ablate or prune")
    return sites


def _resolve(model: nn.Module, spec: Mapping[Any, Sequence[int]]) -> list[tuple[AttentionSite, list[int]]]:
    """Map ``{layer: [heads]}`` to sites, checking that layers and heads exist."""
    sites = attention_sites(model)
    stacks = sorted({s.stack for s in sites.values()})
    out = []
    for key, heads in spec.items():
        name = key
        if isinstance(key, int):
            if len(stacks) != 1:
                raise T5LabError(f"layer {key} is ambiguous in a seq2seq model; name it 'encoder.{key}' or 'decoder.{key}'")
            name = f"{stacks[0]}.{key}"
        if name not in sites:
            known = ", ".join(sorted(sites, key=lambda n: (n.split(".")[0], int(n.split(".")[1]), n)))
            raise T5LabError(f"no attention layer {key!r}; layers are: {known}")
        site = sites[name]
        heads = sorted({int(h) for h in heads})
        bad = [h for h in heads if not 0 <= h < site.original_heads]
        if bad:
            raise T5LabError(f"{name}: head(s) {bad} out of range; the layer has heads 0..{site.original_heads - 1}")
        out.append((site, heads))
    return out


def _current_positions(site: AttentionSite, heads: list[int]) -> list[int]:
    """Positions in the current (possibly pruned) layout of original head indices; pruned ones drop."""
    kept = list(getattr(site.module, "_t5lab_kept", range(site.n_heads)))
    return [kept.index(h) for h in heads if h in kept]


@contextmanager
def ablate_heads(model: nn.Module, heads: Mapping[Any, Sequence[int]]) -> Iterator[nn.Module]:
    """Zero the outputs of chosen attention heads inside the ``with`` block.

    Args:
        model: a T5-family or GPT-2 model.
        heads: ``{"decoder.0": [1], "encoder.1": [0, 2], "decoder.1.cross": [3]}`` (an int layer
            is accepted for single-stack models).

    Yields:
        The model, with hooks that are removed on exit (also on error).

    Example:
        >>> with ablate_heads(model, {"decoder.0": [1]}):
        ...     loss = model(**batch).loss
    """
    handles = []
    try:
        for site, chosen in _resolve(model, heads):
            positions = _current_positions(site, chosen)
            if not positions:
                continue
            keep = torch.ones(site.n_heads)
            keep[positions] = 0.0

            def hook(_module, args, keep=keep, head_dim=site.head_dim):
                (x, *rest) = args  # (B, T, H * D): heads concatenated
                shape = x.shape
                x = x.view(*shape[:-1], -1, head_dim) * keep.to(x)[:, None]  # (B, T, H, D)
                return (x.view(shape), *rest)

            handles.append(site.out_proj.register_forward_pre_hook(hook))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _select_rows(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``linear`` keeping ``index`` along ``dim`` of its weight (0 = outputs, 1 = inputs)."""
    weight = linear.weight.index_select(dim, index).detach().clone()
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    new = new.to(device=weight.device, dtype=weight.dtype)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        bias = linear.bias if dim == 1 else linear.bias.index_select(0, index)
        new.bias.data.copy_(bias.detach())
    new.weight.requires_grad_(linear.weight.requires_grad)
    return new


def _bias_pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Give a pruned self-attention layer only its own heads' slice of the shared position bias."""
    bias = kwargs.get("position_bias")
    if bias is None and getattr(module, "has_relative_attention_bias", False):
        hidden = args[0] if args else kwargs["hidden_states"]
        cache = passed_cache(kwargs)
        past = cache.get_seq_length(module.layer_idx) if cache is not None else 0
        # the same bias transformers' T5Attention computes, over the shared head columns
        bias = module.compute_bias(hidden.shape[1], past + hidden.shape[1], device=hidden.device, past_seen_tokens=past)
    if bias is None:
        return args, kwargs
    module._t5lab_shared_bias = bias  # (1, H_shared, Tq, Tk), handed on to the next layers
    kwargs["position_bias"] = bias.index_select(1, module._t5lab_bias_index.to(bias.device))
    return args, kwargs


def _bias_post_hook(module: nn.Module, args: tuple, kwargs: dict, output: tuple) -> tuple:
    shared = module.__dict__.pop("_t5lab_shared_bias", None)
    if shared is None:
        return output
    return (output[0], shared, *output[2:])


def prune_heads(model: nn.Module, heads: Mapping[Any, Sequence[int]]) -> nn.Module:
    """Physically remove attention heads from T5 self-attention layers, in place.

    Head indices are the original ones (pruning twice with the same index is a no-op). The pruned
    model computes what the unpruned model computes with the same heads ablated.

    Args:
        model: a T5-family model (``t5``, ``pseudo_dec``, ``decoder_only``, ``enct5``).
        heads: ``{"encoder.0": [1, 2], "decoder.1": [0]}`` (an int layer for single-stack models).

    Returns:
        The same model object, pruned. Its ``config.num_heads`` is unchanged (layers now differ),
        so a pruned model is for analysis and is not reloadable with ``from_pretrained``.

    Raises:
        T5LabError: an unknown layer, a head out of range, cross-attention, GPT-2, or a layer left
            without heads.
    """
    resolved = _resolve(model, heads)
    touched_stacks: dict[str, list[AttentionSite]] = {}
    for site, chosen in resolved:
        if site.cross or not hasattr(site.module, "q"):
            raise T5LabError(f"{site.name}: only T5 self-attention can be pruned; use ablate_heads for this layer")
        attn = site.module
        kept = list(getattr(attn, "_t5lab_kept", range(attn.n_heads)))
        pruned = set(getattr(attn, "_t5lab_pruned", ())) | set(chosen)
        new_kept = [h for h in kept if h not in pruned]
        if not new_kept:
            raise T5LabError(f"{site.name}: cannot prune every head of a layer; keep at least one")
        positions = torch.tensor([kept.index(h) for h in new_kept], device=attn.q.weight.device)
        d = attn.key_value_proj_dim
        rows = (positions[:, None] * d + torch.arange(d, device=positions.device)).reshape(-1)  # (H' * D,)
        attn.q = _select_rows(attn.q, rows, 0)
        attn.k = _select_rows(attn.k, rows, 0)
        attn.v = _select_rows(attn.v, rows, 0)
        attn.o = _select_rows(attn.o, rows, 1)
        attn.n_heads = len(new_kept)
        attn.inner_dim = attn.n_heads * d
        attn._t5lab_kept = new_kept
        attn._t5lab_pruned = sorted(pruned)
        touched_stacks.setdefault(site.stack, [])
    # re-plan the shared relative position bias of every stack that changed
    sites = attention_sites(model)
    for stack in touched_stacks:
        selfs = sorted((s for s in sites.values() if s.stack == stack and not s.cross), key=lambda s: s.layer)
        first = selfs[0].module
        if not getattr(first, "has_relative_attention_bias", False):
            continue
        table_heads = list(getattr(first, "_t5lab_table_heads", range(first.relative_attention_bias.weight.shape[1])))
        needed = sorted({h for s in selfs for h in getattr(s.module, "_t5lab_kept", range(s.n_heads))})
        if needed != table_heads:
            cols = torch.tensor([table_heads.index(h) for h in needed], device=first.relative_attention_bias.weight.device)
            # the decoder-only prefix LM keeps a second per-head table for forward distances
            for table in ("relative_attention_bias", "prefix_forward_bias"):
                old = getattr(first, table, None)
                if isinstance(old, nn.Embedding):
                    new = nn.Embedding(old.num_embeddings, len(needed)).to(old.weight)
                    new.weight.data.copy_(old.weight.index_select(1, cols).detach())
                    setattr(first, table, new)
            first._t5lab_table_heads = needed
        for s in selfs:
            attn = s.module
            kept = list(getattr(attn, "_t5lab_kept", range(attn.n_heads)))
            attn._t5lab_bias_index = torch.tensor([needed.index(h) for h in kept])
            if not getattr(attn, "_t5lab_hooked", False):
                attn.register_forward_pre_hook(_bias_pre_hook, with_kwargs=True)
                attn.register_forward_hook(_bias_post_hook, with_kwargs=True)
                attn._t5lab_hooked = True
    return model
