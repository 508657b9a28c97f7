"""Named hook points for every T5 variant, an activation cache, and a hooks context manager.

The names follow TransformerLens (Nanda & Bloom, https://github.com/TransformerLensOrg/TransformerLens)
with a stack prefix, because T5 has two stacks::

    {stack}.hook_embed                                  token embedding the stack reads (B, T, D)
    {stack}.hook_pos_embed                              pseudo encoder's absolute positions (B|1, T, D)
    {stack}.blocks.{i}.hook_resid_pre                   input of block i (B, T, D)
    {stack}.blocks.{i}.ln1.hook_normalized              self-attention's pre-norm output (B, T, D)
    {stack}.blocks.{i}.attn.hook_q | hook_k | hook_v    per-head projections (B, T, H, d_kv)
    {stack}.blocks.{i}.attn.hook_pattern                softmax probabilities (B, H, Tq, Tk)
    {stack}.blocks.{i}.attn.hook_z                      per-head mixed values, input of ``o`` (B, T, H, d_kv)
    {stack}.blocks.{i}.attn.hook_result                 per-head share of the output (B, T, H, D)
    {stack}.blocks.{i}.attn.hook_attn_out               attention output, ``o(z)`` (B, T, D)
    {stack}.blocks.{i}.hook_resid_mid                   after self-attention's residual add (B, T, D)
    decoder.blocks.{i}.ln_cross.hook_normalized         cross-attention's pre-norm output
    decoder.blocks.{i}.cross_attn.hook_*                the same seven points for cross-attention
                                                        (keys/values over the encoder positions)
    decoder.blocks.{i}.hook_resid_mid_cross             after cross-attention's residual add
    {stack}.blocks.{i}.ln2.hook_normalized              feed-forward's pre-norm output
    {stack}.blocks.{i}.mlp.hook_pre                     ``wi`` (gated: ``wi_0``) output (B, T, d_ff)
    {stack}.blocks.{i}.mlp.hook_pre_linear              gated feed-forward only: ``wi_1`` output
    {stack}.blocks.{i}.mlp.hook_post                    activation, input of ``wo`` (B, T, d_ff)
    {stack}.blocks.{i}.mlp.hook_mlp_out                 feed-forward output (B, T, D)
    {stack}.blocks.{i}.hook_resid_post                  output of block i (B, T, D)
    {stack}.ln_final.hook_scale                         final RMS norm's 1 / rms(x) (B, T, 1)
    {stack}.ln_final.hook_normalized                    the stack's output, after the final norm

``stack`` is ``encoder`` or ``decoder``; a causal LM (``decoder_only``) has only ``decoder``, the
pseudo decoder's pseudo encoder only ``encoder.hook_embed``, ``encoder.hook_pos_embed`` and
``encoder.ln_final.*``, and EncT5 has its encoder and its shallow prompt decoder (whose
``hook_embed`` is the prompt embeddings).

Mechanism: PyTorch forward and forward-pre hooks on the modules that carry transformers' T5 names
(``block.{i}.layer.0.SelfAttention.{q,k,v,o}``, ``layer.1.EncDecAttention``,
``layer.{-1}.DenseReluDense.{wi|wi_0,wi_1,wo}``, ``layer.N.layer_norm``, ``final_layer_norm``), so
the same code serves transformers' own T5 and t5lab's core. Hooks exist only inside
:func:`hooks` (and :func:`run_with_cache`): a model outside them has no hook at all, so hooks off
cost nothing (:func:`measure_overhead` measures it side by side).

Three points have no module boundary of their own and are derived:

- ``hook_embed`` is a pre-hook on the stack: it reads ``inputs_embeds`` or computes
  ``embed_tokens(input_ids)``; a replacement is passed on as ``inputs_embeds``.
- ``hook_pattern`` is read from the weights the attention module returns. While a pattern is
  hooked the model runs eager attention (sdpa returns no weights). A replaced pattern recomputes
  the attention output as ``o(pattern @ v)`` from the values of the same call (so it needs all
  keys' values in that call: no KV cache); hooks on that attention's ``z``/``result``/``attn_out``
  then still see the unpatched values. EncT5's absorbed cross-attention computes no ``k``/``v``:
  hooking them (or its pattern) switches that module to the standard form for the ``with`` block.
- ``hook_result`` is computed from ``z`` and ``o``'s weight per head; a replacement is summed
  over heads into the output.

Hook functions are called ``fn(activation, point)`` (``point`` a :class:`HookPoint`, with
``.name``); they return None (read only) or a tensor of the same shape that replaces the
activation (patching). Gradients flow through what they return.
"""

from __future__ import annotations

import difflib
import fnmatch
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from t5lab.errors import T5LabError

STACKS = ("encoder", "decoder")

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]


class UnknownActivation(T5LabError, KeyError):
    """A hook point name the model (or a cache) does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(eq=False)
class HookPoint:
    """One named activation of a model and where its torch hook goes.

    Attributes:
        name: ``"decoder.blocks.1.cross_attn.hook_z"``.
        stack: ``"encoder"`` or ``"decoder"``.
        layer: block index (None for stack-level points).
        kind: how the activation is read: ``pre`` (first input), ``out`` (output), ``out0``
            (first item of a tuple output), ``embed``, ``pattern``, ``result``, ``scale``.
        module: the module the hook is registered on.
        heads: ``(n_heads, head_dim)`` for per-head views of a ``(..., H * d)`` tensor, else None.
        attention: the attention module of attention points (None otherwise).
    """

    name: str
    stack: str
    layer: int | None
    kind: str
    module: nn.Module = field(repr=False)
    heads: tuple[int, int] | None = None
    attention: nn.Module | None = field(default=None, repr=False)

    @property
    def suffix(self) -> str:
        """The name without stack and layer: ``"cross_attn.hook_z"``, ``"hook_resid_post"``."""
        parts = self.name.split(".")
        return ".".join(parts[3:] if self.layer is not None else parts[1:])


# ---------------------------------------------------------------------------------------------
# discovering the points
# ---------------------------------------------------------------------------------------------


def model_stacks(model: nn.Module) -> dict[str, nn.Module]:
    """The model's T5 stacks by name: ``{"encoder": ..., "decoder": ...}`` (one ``decoder`` for a causal LM).

    A stack is a submodule called ``encoder`` or ``decoder`` that has a ``final_layer_norm``.
    """
    found: dict[str, nn.Module] = {}
    for qualname, module in model.named_modules():
        last = qualname.rsplit(".", 1)[-1]
        if last in STACKS and hasattr(module, "final_layer_norm"):
            if last in found:
                raise T5LabError(f"{type(model).__name__} has two '{last}' stacks; hook points need one of each")
            found[last] = module
    if not found:
        raise T5LabError(
            f"{type(model).__name__}: found no T5 encoder/decoder stack (a module with final_layer_norm); "
            "hook points cover the T5 family"
        )
    return {name: found[name] for name in STACKS if name in found}


def _attention_points(prefix: str, stack: str, layer: int, attn: nn.Module) -> list[HookPoint]:
    heads = (int(attn.n_heads), int(attn.key_value_proj_dim))
    p = prefix
    return [
        HookPoint(f"{p}.hook_q", stack, layer, "out", attn.q, heads, attn),
        HookPoint(f"{p}.hook_k", stack, layer, "out", attn.k, heads, attn),
        HookPoint(f"{p}.hook_v", stack, layer, "out", attn.v, heads, attn),
        HookPoint(f"{p}.hook_pattern", stack, layer, "pattern", attn, heads, attn),
        HookPoint(f"{p}.hook_z", stack, layer, "pre", attn.o, heads, attn),
        HookPoint(f"{p}.hook_result", stack, layer, "result", attn.o, heads, attn),
        HookPoint(f"{p}.hook_attn_out", stack, layer, "out", attn.o, None, attn),
    ]


def _block_points(stack: str, i: int, block: nn.Module) -> list[HookPoint]:
    p = f"{stack}.blocks.{i}"
    layers = block.layer
    self_layer, ff_layer = layers[0], layers[-1]
    cross_layer = next((m for m in list(layers)[1:-1] if hasattr(m, "EncDecAttention")), None)
    points = [HookPoint(f"{p}.hook_resid_pre", stack, i, "pre", block)]
    points.append(HookPoint(f"{p}.ln1.hook_normalized", stack, i, "out", self_layer.layer_norm))
    points += _attention_points(f"{p}.attn", stack, i, self_layer.SelfAttention)
    points.append(HookPoint(f"{p}.hook_resid_mid", stack, i, "out0", self_layer))
    if cross_layer is not None:
        points.append(HookPoint(f"{p}.ln_cross.hook_normalized", stack, i, "out", cross_layer.layer_norm))
        points += _attention_points(f"{p}.cross_attn", stack, i, cross_layer.EncDecAttention)
        points.append(HookPoint(f"{p}.hook_resid_mid_cross", stack, i, "out0", cross_layer))
    points.append(HookPoint(f"{p}.ln2.hook_normalized", stack, i, "out", ff_layer.layer_norm))
    mlp = ff_layer.DenseReluDense
    if hasattr(mlp, "wi_0"):  # gated feed-forward (T5 v1.1)
        points.append(HookPoint(f"{p}.mlp.hook_pre", stack, i, "out", mlp.wi_0))
        points.append(HookPoint(f"{p}.mlp.hook_pre_linear", stack, i, "out", mlp.wi_1))
    else:
        points.append(HookPoint(f"{p}.mlp.hook_pre", stack, i, "out", mlp.wi))
    points.append(HookPoint(f"{p}.mlp.hook_post", stack, i, "pre", mlp.wo))
    points.append(HookPoint(f"{p}.mlp.hook_mlp_out", stack, i, "out", mlp.wo))
    points.append(HookPoint(f"{p}.hook_resid_post", stack, i, "out0", block))
    return points


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Every hook point of ``model``, by name, in the order a forward pass reaches them.

    Recomputed on each call (cheap), so it follows structural changes such as
    :func:`t5lab.prune_heads` replacing projections.
    """
    points: list[HookPoint] = []
    for stack, module in model_stacks(model).items():
        points.append(HookPoint(f"{stack}.hook_embed", stack, None, "embed", module))
        positions = getattr(module, "embed_positions", None)
        if isinstance(positions, nn.Module):
            points.append(HookPoint(f"{stack}.hook_pos_embed", stack, None, "out", positions))
        for i, block in enumerate(getattr(module, "block", None) or []):
            points += _block_points(stack, i, block)
        norm = module.final_layer_norm
        points.append(HookPoint(f"{stack}.ln_final.hook_scale", stack, None, "scale", norm))
        points.append(HookPoint(f"{stack}.ln_final.hook_normalized", stack, None, "out", norm))
    return {p.name: p for p in points}


def hook_names(model: nn.Module) -> list[str]:
    """The names of every hook point of ``model``, in forward order (see the module docstring)."""
    return list(hook_points(model))


def n_layers(model: nn.Module, stack: str) -> int:
    """Number of blocks of one stack (0 for the pseudo encoder)."""
    stacks = model_stacks(model)
    if stack not in stacks:
        raise T5LabError(f"the model has no {stack!r} stack; it has {', '.join(stacks)}")
    return len(getattr(stacks[stack], "block", None) or [])


def _unknown(name: str, known: Sequence[str]) -> UnknownActivation:
    close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return UnknownActivation(f"unknown hook point {name!r}{hint}; hook_names(model) lists the {len(known)} points")


def select_names(model: nn.Module, names: Any = None) -> list[str]:
    """Resolve ``names``: None (all), a name, a glob (``"*.hook_resid_post"``), a list of those, or a predicate."""
    known = hook_names(model)
    if names is None:
        return known
    if callable(names):
        return [n for n in known if names(n)]
    if isinstance(names, str):
        names = [names]
    chosen: list[str] = []
    for pattern in names:
        if any(c in pattern for c in "*?["):
            matched = fnmatch.filter(known, pattern)
            if not matched:
                raise UnknownActivation(f"no hook point matches {pattern!r}; hook_names(model) lists them")
        elif pattern in known:
            matched = [pattern]
        else:
            raise _unknown(pattern, known)
        chosen += [m for m in matched if m not in chosen]
    order = {n: i for i, n in enumerate(known)}
    return sorted(chosen, key=order.__getitem__)


# ---------------------------------------------------------------------------------------------
# registering
# ---------------------------------------------------------------------------------------------


def _compose(point: HookPoint, fns: Sequence[HookFn]) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """One callable running the user functions in order; None when none replaced the activation."""

    def run(x: torch.Tensor) -> torch.Tensor | None:
        replaced = None
        for fn in fns:
            out = fn(x if replaced is None else replaced, point)
            if out is not None:
                if not torch.is_tensor(out) or out.shape != x.shape:
                    shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
                    raise T5LabError(
                        f"{point.name}: the hook function returned {shape}; return None or a tensor of shape {tuple(x.shape)}"
                    )
                replaced = out
        return replaced

    return run


def _to_heads(x: torch.Tensor, heads: tuple[int, int] | None) -> torch.Tensor:
    return x if heads is None else x.unflatten(-1, heads)  # (..., H * d) -> (..., H, d)


def _from_heads(x: torch.Tensor, heads: tuple[int, int] | None) -> torch.Tensor:
    return x if heads is None else x.flatten(-2)


def _first_input(args: tuple, kwargs: dict) -> tuple[torch.Tensor, str | None]:
    if args:
        return args[0], None
    for key in ("hidden_states", "input"):
        if key in kwargs:
            return kwargs[key], key
    raise T5LabError("hook: the module was called without a tensor input")


def _register(point: HookPoint, run: Callable[[torch.Tensor], torch.Tensor | None]) -> list[Any]:
    """Put the torch hook(s) for one point on its module; returns the handles."""
    module, heads = point.module, point.heads
    if point.kind == "pre":

        def pre(_module, args, kwargs):
            x, key = _first_input(args, kwargs)
            new = run(_to_heads(x, heads))
            if new is None:
                return None
            new = _from_heads(new, heads)
            if key is None:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, key: new}

        return [module.register_forward_pre_hook(pre, with_kwargs=True)]
    if point.kind == "out":

        def out(_module, _args, output):
            new = run(_to_heads(output, heads))
            return None if new is None else _from_heads(new, heads)

        return [module.register_forward_hook(out)]
    if point.kind == "out0":

        def out0(_module, _args, output):
            new = run(output[0])
            return None if new is None else (new, *output[1:])

        return [module.register_forward_hook(out0)]
    if point.kind == "embed":
        return [module.register_forward_pre_hook(_embed_hook(run), with_kwargs=True)]
    if point.kind == "result":
        return [module.register_forward_hook(_result_hook(run, heads))]
    if point.kind == "scale":
        return [module.register_forward_hook(_scale_hook(run))]
    if point.kind == "pattern":
        return _pattern_hooks(point, run)
    raise AssertionError(point.kind)  # pragma: no cover - the kinds above are all there are


def _embed_hook(run):
    def pre(stack, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        ids, positional = kwargs.get("input_ids"), False
        if ids is None and args and torch.is_tensor(args[0]) and not args[0].is_floating_point():
            ids, positional = args[0], True
        if embeds is None:
            if ids is None:
                return None
            embeds = stack.embed_tokens(ids)  # (B, T, D), what the stack would compute
        new = run(embeds)
        if new is None:
            return None
        kwargs = {**kwargs, "input_ids": None, "inputs_embeds": new}
        return (args[1:] if positional else args), kwargs

    return pre


def _result_hook(run, heads):
    def hook(o, args, output):
        z = args[0].unflatten(-1, heads)  # (B, T, H, d)
        weight = o.weight.view(o.weight.shape[0], *heads)  # (D, H, d): head h owns columns h*d:(h+1)*d
        result = torch.einsum("bthd,mhd->bthm", z, weight.to(z.dtype))  # (B, T, H, D)
        new = run(result)
        return None if new is None else new.sum(-2).to(output.dtype)

    return hook


def _scale_hook(run):
    def hook(norm, args, output):
        x = args[0]
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        scale = torch.rsqrt(variance + norm.variance_epsilon)  # (B, T, 1): T5LayerNorm's factor
        new = run(scale)
        if new is None:
            return None
        hidden = x * new
        if norm.weight.dtype in (torch.float16, torch.bfloat16):
            hidden = hidden.to(norm.weight.dtype)
        return norm.weight * hidden

    return hook


def _pattern_hooks(point: HookPoint, run) -> list[Any]:
    attn, heads = point.attention, point.heads
    slot: dict[str, torch.Tensor] = {}

    def clear(_module, _args):
        slot.clear()

    def keep_values(_module, _args, output):
        slot["values"] = output  # (B, K, H * d): this call's values, for a replaced pattern

    def hook(_module, _args, output):
        weights = output[2] if isinstance(output, tuple) and len(output) > 2 else None
        if weights is None:
            raise T5LabError(f"{point.name}: the attention returned no weights; run it with eager attention")
        new = run(weights)  # (B, H, Q, K)
        if new is None:
            return None
        values = slot.get("values")
        if values is None or values.shape[1] != weights.shape[-1]:
            raise T5LabError(
                f"{point.name}: patching the pattern needs this call's values of every key; "
                "run without a KV cache (use_cache=False)"
            )
        v = values.unflatten(-1, heads).transpose(1, 2)  # (B, H, K, d)
        z = torch.matmul(new.to(v.dtype), v).transpose(1, 2).flatten(2)  # (B, Q, H * d)
        out = nn.functional.linear(z.to(attn.o.weight.dtype), attn.o.weight)
        return (out.to(output[0].dtype), *output[1:])

    return [
        attn.register_forward_pre_hook(clear),
        attn.v.register_forward_hook(keep_values),
        attn.register_forward_hook(hook),
    ]


@contextmanager
def _standard_cross_attention(modules: list[nn.Module]) -> Iterator[None]:
    """EncT5's absorbed cross-attention skips ``k``/``v``; use the standard form inside the block."""
    saved = [(m, m.__dict__.get("absorb_kv", _MISSING)) for m in modules]
    for m, _ in saved:
        m.absorb_kv = False
    try:
        yield
    finally:
        for m, old in saved:
            if old is _MISSING:
                m.__dict__.pop("absorb_kv", None)
            else:
                m.absorb_kv = old


_MISSING = object()


@contextmanager
def hooks(model: nn.Module, fns: Mapping[str, HookFn | Sequence[HookFn]]) -> Iterator[nn.Module]:
    """Run hook functions at named points inside the ``with`` block; always removed on exit.

    Args:
        model: any T5-family model of t5lab or transformers.
        fns: ``{name: fn}`` or ``{name: [fn, ...]}``; ``fn(activation, point)`` returns None or a
            replacement of the same shape (see the module docstring for shapes).

    Yields:
        The model.

    Raises:
        T5LabError: an unknown name (one line, with the closest names); a hook function returning
            a tensor of another shape.

    Example:
        >>> with hooks(model, {"decoder.blocks.0.attn.hook_z": lambda z, p: z * 0}):
        ...     logits = model(**batch).logits
    """
    points = hook_points(model)
    known = list(points)
    order = {n: i for i, n in enumerate(known)}
    for name in fns:
        if name not in points:
            raise _unknown(name, known)
    chosen = sorted(fns, key=order.__getitem__)
    handles: list[Any] = []
    with ExitStack() as stack:
        if any(points[n].kind == "pattern" for n in chosen):
            from t5lab.explore.attention import eager_attention

            stack.enter_context(eager_attention(model))
        absorbed = []
        for n in chosen:
            p = points[n]
            if p.attention is not None and hasattr(p.attention, "absorb_kv") and n.endswith(("hook_k", "hook_v", "hook_pattern")):
                if p.attention not in absorbed:
                    absorbed.append(p.attention)
        if absorbed:
            stack.enter_context(_standard_cross_attention(absorbed))
        try:
            for n in chosen:
                value = fns[n]
                listed = list(value) if isinstance(value, (list, tuple)) else [value]
                handles += _register(points[n], _compose(points[n], listed))
            yield model
        finally:
            for handle in handles:
                handle.remove()


# ---------------------------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------------------------


class ActivationCache(Mapping):
    """Activations of one forward pass by hook point name (a read-only dict), plus the model output.

    Attributes:
        output: what the model returned.
        layers: ``{"encoder": n, "decoder": n}`` blocks per stack.
    """

    def __init__(self, activations: dict[str, torch.Tensor], output: Any = None, layers: dict[str, int] | None = None):
        self._acts = activations
        self.output = output
        self.layers = dict(layers or {})

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._acts[name]
        except KeyError:
            raise _unknown(name, list(self._acts)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._acts)

    def __len__(self) -> int:
        return len(self._acts)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} activations, layers={self.layers})"

    def _stack_name(self, stack: str | None) -> str:
        if stack is not None:
            return stack
        with_blocks = [s for s, n in self.layers.items() if n]
        if len(with_blocks) == 1:
            return with_blocks[0]
        raise T5LabError(f"say which stack: one of {', '.join(self.layers)}")

    @staticmethod
    def _suffix(kind: str) -> str:
        *component, last = kind.split(".")
        last = last if last.startswith("hook_") else f"hook_{last}"
        return ".".join([*component, last])

    def stack(self, kind: str, stack: str | None = None) -> torch.Tensor:
        """One activation of every block stacked along a new first dim: ``(L, ...)``.

        ``kind`` is a block-level suffix: ``"resid_post"``, ``"attn.z"``, ``"cross_attn.hook_pattern"``...
        """
        stack = self._stack_name(stack)
        suffix = self._suffix(kind)
        names = [f"{stack}.blocks.{i}.{suffix}" for i in range(self.layers.get(stack, 0))]
        if not names:
            raise T5LabError(f"the {stack} stack has no blocks")
        return torch.stack([self[n] for n in names])

    def accumulated_resid(self, stack: str | None = None) -> torch.Tensor:
        """The residual stream before block 0 and after every block: ``(L + 1, B, T, D)``."""
        stack = self._stack_name(stack)
        return torch.cat([self[f"{stack}.blocks.0.hook_resid_pre"][None], self.stack("resid_post", stack)])

    def head(self, name: str, head: int) -> torch.Tensor:
        """One head's slice of a per-head activation (``hook_q|k|v|z|result``: dim 2; ``hook_pattern``: dim 1)."""
        x = self[name]
        dim = 1 if name.endswith("hook_pattern") else 2
        if not name.endswith(("hook_q", "hook_k", "hook_v", "hook_z", "hook_result", "hook_pattern")):
            raise T5LabError(f"{name} is not a per-head activation")
        if not 0 <= head < x.shape[dim]:
            raise T5LabError(f"{name}: head {head} out of range 0..{x.shape[dim] - 1}")
        return x.select(dim, head)

    def to(self, device: str | torch.device) -> ActivationCache:
        return ActivationCache({k: v.to(device) for k, v in self._acts.items()}, self.output, self.layers)


def _call(model: nn.Module, inputs: Any, kwargs: dict[str, Any]) -> Any:
    if torch.is_tensor(inputs):
        return model(input_ids=inputs, **kwargs)
    if isinstance(inputs, Mapping):
        return model(**inputs, **kwargs)
    raise T5LabError(f"inputs must be a dict of model inputs or an input_ids tensor, got {type(inputs).__name__}")


def run_with_cache(
    model: nn.Module,
    inputs: Any,
    names: Any = None,
    *,
    device: str | torch.device | None = "cpu",
    grad: bool = False,
    fwd_hooks: Mapping[str, HookFn | Sequence[HookFn]] | None = None,
    **forward_kwargs: Any,
) -> ActivationCache:
    """Run the model once and keep the activations at ``names``.

    Args:
        model: a T5-family model.
        inputs: a dict of forward inputs (``input_ids``, ``attention_mask``, ``labels`` or
            ``decoder_input_ids``...) or an ``input_ids`` tensor.
        names: None (every point), a name, a glob such as ``"decoder.*.hook_resid_post"``, a list
            of those, or a predicate on names.
        device: where cached tensors go (``"cpu"``; None keeps them on the model's device).
        grad: keep the autograd graph (cached tensors are not detached and stay on the device).
        fwd_hooks: extra ``{name: fn}`` hooks run in the same pass (before caching), e.g. a patch.
        **forward_kwargs: passed to the model's forward (e.g. ``use_cache=False``).

    Returns:
        An :class:`ActivationCache`; ``cache.output`` is the model output. A point that fires more
        than once in the call (a stack run twice) keeps its last activation; collect every call
        with :func:`hooks` instead.
    """
    chosen = select_names(model, names)
    store: dict[str, torch.Tensor] = {}

    def save(x: torch.Tensor, point: HookPoint) -> None:
        store[point.name] = x if grad else (x.detach() if device is None else x.detach().to(device))

    fns: dict[str, list[HookFn]] = {}
    for name, fn in (fwd_hooks or {}).items():
        fns[name] = list(fn) if isinstance(fn, (list, tuple)) else [fn]
    for name in chosen:
        fns.setdefault(name, []).append(save)
    with hooks(model, fns), torch.set_grad_enabled(grad):
        output = _call(model, inputs, forward_kwargs)
    layers = {s: len(getattr(m, "block", None) or []) for s, m in model_stacks(model).items()}
    return ActivationCache(store, output, layers)


# ---------------------------------------------------------------------------------------------
# overhead
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def measure_overhead(model: nn.Module, inputs: Any, repeats: int = 100) -> dict[str, float]:
    """Forward time of the model as it is vs. inside an empty ``hooks(model, {})`` block, side by side.

    Each repeat times one forward of each condition in turn (plain, empty hooks block, every point
    hooked with a no-op function), so that machine noise hits all three alike; the medians are
    compared. Only the forward is timed, not entering the block.

    Returns:
        ``{"plain_ms", "empty_hooks_ms", "ratio"}`` (plain / empty: >= 0.98 means no measurable
        cost) and ``{"all_hooks_ms", "all_hooks_ratio"}`` (the cost of hooks that are on).
    """

    def timed() -> float:
        start = time.perf_counter()
        _call(model, inputs, {})
        return (time.perf_counter() - start) * 1e3

    noop = {name: (lambda x, p: None) for name in hook_names(model) if not name.endswith("hook_pattern")}
    _call(model, inputs, {})  # warm up
    plain, empty, every = [], [], []
    for _ in range(repeats):
        plain.append(timed())
        with hooks(model, {}):
            empty.append(timed())
        with hooks(model, noop):
            every.append(timed())
    best_plain, best_empty, best_all = (float(torch.tensor(t).median()) for t in (plain, empty, every))
    return {
        "plain_ms": best_plain,
        "empty_hooks_ms": best_empty,
        "ratio": best_plain / best_empty,
        "all_hooks_ms": best_all,
        "all_hooks_ratio": best_plain / best_all,
    }
