"""Activation patching and causal tracing on the named hook points of :mod:`t5lab.explore.hooks`.

Activation patching (Vig et al. 2020, arXiv 2004.12265; Heimersheim & Nanda 2024, "How to use
and interpret activation patching", arXiv 2404.15255): run the model on one input (the
*receiver*) and overwrite one activation with its value from a run on another input (the
*source*); how far the metric moves says how much the difference between the two inputs flows
through that activation. :func:`patch` sweeps layers x positions x components:

- ``resid_pre`` / ``resid_mid`` / ``resid_post``, ``attn_out``, ``cross_attn_out``, ``mlp_out``:
  one position at a time (``per_position``) or all positions at once;
- ``heads`` / ``cross_heads``: one head's ``hook_z`` (self- or cross-attention) at all positions
  (or one position at a time).

By default the receiver is ``clean`` and the source ``corrupt`` ("noising": which activations,
once corrupted, break the clean behaviour; this is what zeroing a head with
:func:`t5lab.ablate_heads` asks too). ``denoise=True`` runs ``corrupt`` and restores clean
activations (which suffice). The effect is normalised so that 0 is the receiver's metric and 1 the
source's: ``effect = (patched - receiver) / (source - receiver)``.

Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT",
arXiv 2202.05262, sec. 2.1) is the denoising case with a noised copy as the corrupt run: Gaussian
noise of 3x the embedding standard deviation is added to the input embeddings of chosen tokens
(``samples`` draws, averaged), and each hidden state (or a window of ``attn_out``/``mlp_out``
layers) is restored to its clean value in turn. :func:`causal_trace` does this across the encoder,
the decoder and the cross-attention (the paper traces a decoder-only GPT).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from t5lab.errors import T5LabError
from t5lab.explore.hooks import HookPoint, hook_points, hooks, model_stacks, run_with_cache

# component -> (hook suffix inside a block, per head)
COMPONENTS: dict[str, tuple[str, bool]] = {
    "resid_pre": ("hook_resid_pre", False),
    "resid_mid": ("hook_resid_mid", False),
    "resid_post": ("hook_resid_post", False),
    "attn_out": ("attn.hook_attn_out", False),
    "cross_attn_out": ("cross_attn.hook_attn_out", False),
    "mlp_out": ("mlp.hook_mlp_out", False),
    "heads": ("attn.hook_z", True),
    "cross_heads": ("cross_attn.hook_z", True),
}
DEFAULT_COMPONENTS = ("resid_post", "attn_out", "cross_attn_out", "mlp_out", "heads", "cross_heads")

Metric = Callable[[Any], "float | torch.Tensor"]


@dataclass(frozen=True)
class Patch:
    """One patch: a hook point, and optionally one position (dim 1) and one head (dim 2)."""

    name: str
    position: int | None = None
    head: int | None = None


@dataclass
class PatchRow:
    """The metric with one patch (or one window of patches) applied."""

    component: str
    stack: str
    layer: int
    position: int | None
    head: int | None
    value: float
    effect: float  # (value - receiver) / (source - receiver)


@dataclass
class PatchResult:
    """The rows of a patching sweep or causal trace, with tables and heatmaps.

    Attributes:
        rows: one per patch.
        receiver: the metric of the unpatched receiver run.
        source: the metric of the source run.
        receiver_name / source_name: "clean" / "corrupt" (or the reverse, or "noised").
        tokens: ``{stack: [token strings]}`` to label positions (empty: indices).
        files: PNGs written by :meth:`heatmaps`.
    """

    rows: list[PatchRow]
    receiver: float
    source: float
    receiver_name: str = "clean"
    source_name: str = "corrupt"
    tokens: dict[str, list[str]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def panels(self) -> list[tuple[str, str]]:
        """The (stack, component) pairs present, in sweep order."""
        seen: list[tuple[str, str]] = []
        for r in self.rows:
            if (r.stack, r.component) not in seen:
                seen.append((r.stack, r.component))
        return seen

    def grid(self, stack: str, component: str, value: str = "effect") -> tuple[torch.Tensor, list[str], list[str]]:
        """``(grid, row labels, column labels)``: layers (x heads) down, positions (or heads) across."""
        rows = [r for r in self.rows if r.stack == stack and r.component == component]
        if not rows:
            raise T5LabError(f"no {component!r} rows for the {stack}; panels are {self.panels()}")
        per_head = rows[0].head is not None
        by_position = rows[0].position is not None
        if per_head and not by_position:  # layers down, heads across

            def key(r: PatchRow) -> tuple:
                return (r.layer,)

            def col(r: PatchRow) -> int:
                return r.head if r.head is not None else -1

        else:  # layers (x heads) down, positions (or "all") across

            def key(r: PatchRow) -> tuple:
                return (r.layer, r.head) if per_head else (r.layer,)

            def col(r: PatchRow) -> int:
                return r.position if r.position is not None else -1

        keys = sorted({key(r) for r in rows})
        cols = sorted({col(r) for r in rows})
        if per_head and not by_position:
            col_labels = [f"H{h}" for h in cols]
        else:
            col_labels = [self._position_label(stack, p) for p in cols]
        grid = torch.full((len(keys), len(cols)), float("nan"))
        for r in rows:
            grid[keys.index(key(r)), cols.index(col(r))] = getattr(r, value)
        row_labels = [f"L{k[0]}" + (f".H{k[1]}" if len(k) > 1 else "") for k in keys]
        return grid, row_labels, col_labels

    def _position_label(self, stack: str, position: int) -> str:
        if position < 0:
            return "all"
        tokens = self.tokens.get(stack) or []
        return f"{position}:{tokens[position]}" if position < len(tokens) else str(position)

    def top(self, n: int = 10) -> list[PatchRow]:
        """The ``n`` rows with the largest ``|effect|``."""
        return sorted(self.rows, key=lambda r: -abs(r.effect) if math.isfinite(r.effect) else 0.0)[:n]

    def table(self, n: int = 15) -> str:
        """A plain-text table of the strongest patches."""
        head = f"{self.receiver_name} metric {self.receiver:.4f}, {self.source_name} metric {self.source:.4f}"
        lines = [head, f"{'stack':<8} {'component':<15} {'layer':>5} {'pos':>5} {'head':>4} {'metric':>9} {'effect':>7}"]
        for r in self.top(n):
            pos = "all" if r.position is None else str(r.position)
            hd = "-" if r.head is None else str(r.head)
            lines.append(f"{r.stack:<8} {r.component:<15} {r.layer:>5} {pos:>5} {hd:>4} {r.value:>9.4f} {r.effect:>7.3f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def heatmaps(self, out_dir: str | os.PathLike, prefix: str = "patch") -> list[Path]:
        """One PNG per stack (a panel per component) of the normalised effect; returns the paths."""
        from t5lab.explore.plots import atomic_savefig, pyplot

        plt = pyplot()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for stack in dict.fromkeys(s for s, _ in self.panels()):
            comps = [c for s, c in self.panels() if s == stack]
            grids = [self.grid(stack, c) for c in comps]
            width = max(3.0, 0.45 * max(len(g[2]) for g in grids) + 1.8)
            heights = [max(1.6, 0.32 * len(g[1]) + 1.0) for g in grids]
            fig, axes = plt.subplots(len(comps), 1, figsize=(width, sum(heights) + 0.6), squeeze=False,
                                     layout="constrained", height_ratios=heights)
            for ax, comp, (grid, row_labels, col_labels) in zip(axes[:, 0], comps, grids):
                image = ax.imshow(grid.numpy(), cmap="RdBu_r", vmin=-1.0, vmax=1.0, aspect="auto")
                ax.set_title(f"{stack} {comp}", fontsize=9)
                ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
                ax.set_xticks(range(len(col_labels)), col_labels, rotation=90, fontsize=7)
                fig.colorbar(image, ax=ax, shrink=0.9, label="effect")
            fig.suptitle(f"patching {self.source_name} into {self.receiver_name} (1 = {self.source_name} metric)", fontsize=9)
            path = atomic_savefig(fig, out_dir / f"{prefix}_{stack}.png")
            plt.close(fig)
            files.append(path)
        self.files = files
        return files


def plot_head_grids(grids: Mapping[str, torch.Tensor], path: str | os.PathLike, title: str = "") -> Path:
    """Layers x heads grids side by side (e.g. patching effect next to ablation loss increase), one colour scale each."""
    from t5lab.explore.plots import atomic_savefig, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(1.0 + 2.6 * len(grids), 2.4), squeeze=False, layout="constrained")
    for ax, (name, grid) in zip(axes[0], grids.items()):
        grid = torch.as_tensor(grid, dtype=torch.float32)
        image = ax.imshow(grid.numpy(), cmap="Reds", vmin=min(0.0, float(grid.min())), aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, f"{float(grid[i, j]):.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(grid.shape[1]), [f"H{h}" for h in range(grid.shape[1])], fontsize=7)
        ax.set_yticks(range(grid.shape[0]), [f"L{i}" for i in range(grid.shape[0])], fontsize=7)
        ax.set_title(name, fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=9)
    out = atomic_savefig(fig, Path(path))
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------


def _aligned(output: Any, labels: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    logits = output["logits"] if isinstance(output, Mapping) else output.logits
    if causal:  # position t predicts label t + 1 (labels are not shifted)
        return logits[:, :-1], labels[:, 1:]
    return logits, labels


def target_logprob(labels: torch.Tensor, causal: bool, reduce: str = "mean") -> Metric:
    """Metric: the log-probability of the target tokens (``labels != -100``), mean or sum per example, batch-averaged."""

    def metric(output: Any) -> torch.Tensor:
        logits, lab = _aligned(output, labels.to(_logits(output).device), causal)
        logp = torch.log_softmax(logits.float(), -1)
        keep = lab != -100
        picked = logp.gather(-1, lab.clamp_min(0)[..., None])[..., 0] * keep  # (B, T)
        per_example = picked.sum(-1) / (keep.sum(-1).clamp_min(1) if reduce == "mean" else 1)
        return per_example.mean()

    return metric


def target_prob(labels: torch.Tensor, causal: bool) -> Metric:
    """Metric: the probability of the target tokens, averaged over target tokens and batch (causal tracing's p)."""

    def metric(output: Any) -> torch.Tensor:
        logits, lab = _aligned(output, labels.to(_logits(output).device), causal)
        probs = torch.softmax(logits.float(), -1)
        keep = lab != -100
        picked = probs.gather(-1, lab.clamp_min(0)[..., None])[..., 0] * keep
        return (picked.sum(-1) / keep.sum(-1).clamp_min(1)).mean()

    return metric


def _logits(output: Any) -> torch.Tensor:
    return output["logits"] if isinstance(output, Mapping) else output.logits


def _is_causal(model: Any) -> bool:
    return "encoder" not in model_stacks(model)


def _labels(inputs: Mapping[str, Any]) -> torch.Tensor:
    labels = inputs.get("labels")
    if labels is None:
        raise T5LabError("the inputs have no labels; give labels (the target) or a metric")
    return labels


def encode_pairs(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """One batch of ``(input, target)`` texts with labels, as training encodes them (``t5lab.formulation``).

    Seq2seq: ``input </s>`` to the encoder, labels ``target </s>``; decoder-only:
    ``input </s> target </s>`` with labels on the target. Use texts of equal token lengths to
    patch one batch into another (a batch averages the metric over its examples).
    """
    from t5lab.explore.scoring import text_batches

    pairs = [(str(a), str(b)) for a, b in pairs]
    if not pairs:
        raise T5LabError("give at least one (input, target) pair")
    return next(iter(text_batches(model, tokenizer, pairs, len(pairs))))


def encode_example(model: Any, tokenizer: Any, text: str, target: str | None = None) -> tuple[dict, dict[str, list[str]], str]:
    """``(inputs with labels, {stack: position tokens}, target)`` for one text, as training encodes it.

    Without ``target`` the target is the model's greedy output for ``text``. The tokens label the
    positions of each stack (the decoder's: the shifted target of a seq2seq model, the whole
    sequence of a decoder-only one) for tables and heatmaps.
    """
    from t5lab.explore._common import CLASSIFIER, model_kind
    from t5lab.explore.generation import sample

    if model_kind(model) == CLASSIFIER:
        raise T5LabError(f"{type(model).__name__} is a classifier; patch/lens/causal-trace need a language model")
    if target is None:
        target = sample(model, tokenizer, text, max_new_tokens=32, temperature=0)
    inputs = encode_pairs(model, tokenizer, [(text, target)])
    ids = inputs["input_ids"][0].tolist()
    if model.config.is_encoder_decoder:
        decoder_in = model._shift_right(inputs["labels"])[0].tolist()
        tokens = {"encoder": tokenizer.convert_ids_to_tokens(ids), "decoder": tokenizer.convert_ids_to_tokens(decoder_in)}
    else:
        tokens = {"decoder": tokenizer.convert_ids_to_tokens(ids)}
    return inputs, tokens, target


# ---------------------------------------------------------------------------------------------
# patching
# ---------------------------------------------------------------------------------------------


def _scalar(value: Any) -> float:
    return float(value.detach().float().item()) if torch.is_tensor(value) else float(value)


def _expand(points: Any, model: Any) -> list[tuple[str, str, str, bool]]:
    """``points`` -> ``[(component, stack, block suffix, per_head)]`` for every stack that has it."""
    if isinstance(points, str):
        points = [points]
    names = hook_points(model)
    stacks = [s for s in model_stacks(model) if f"{s}.blocks.0.hook_resid_pre" in names]
    out = []
    for spec in points:
        stack, _, comp = spec.rpartition(".")
        if comp not in COMPONENTS:
            raise T5LabError(f"unknown component {spec!r}; components are {', '.join(COMPONENTS)} (optionally 'encoder.' or 'decoder.' first)")
        if stack and stack not in stacks:
            raise T5LabError(f"{spec!r}: the model has no {stack!r} stack with blocks; it has {', '.join(stacks)}")
        suffix, per_head = COMPONENTS[comp]
        for s in [stack] if stack else stacks:
            if f"{s}.blocks.0.{suffix}" in names:
                out.append((comp, s, suffix, per_head))
            elif stack:
                raise T5LabError(f"{spec!r}: the {s} has no {suffix} (no cross-attention?)")
    if not out:
        raise T5LabError(f"none of {list(points)} exists in this model")
    return out


def _layers(model: Any, stack: str) -> int:
    return len(getattr(model_stacks(model)[stack], "block", None) or [])


def _check_same_length(clean: Mapping[str, Any], corrupt: Mapping[str, Any]) -> None:
    for key in ("input_ids", "decoder_input_ids", "labels"):
        a, b = clean.get(key), corrupt.get(key)
        if torch.is_tensor(a) and torch.is_tensor(b) and a.shape != b.shape:
            raise T5LabError(
                f"clean and corrupt {key} have shapes {tuple(a.shape)} and {tuple(b.shape)}; patching "
                "positions needs inputs of the same token length (choose texts that tokenize to the same length)"
            )


def _replace(x: torch.Tensor, src: torch.Tensor, patch: Patch, point: HookPoint) -> torch.Tensor:
    if src.shape[1:] != x.shape[1:]:
        raise T5LabError(
            f"{point.name}: source has shape {tuple(src.shape)} but this run has {tuple(x.shape)}; "
            "patching needs inputs of the same token length"
        )
    x = x.clone()
    pos = slice(None) if patch.position is None else patch.position
    if patch.head is None:
        x[:, pos] = src[:, pos].to(x)
    else:
        x[:, pos, patch.head] = src[:, pos, patch.head].to(x)
    return x


def _patch_hooks(patches: Sequence[Patch], source: Mapping[str, torch.Tensor]) -> dict[str, list]:
    fns: dict[str, list] = {}
    for p in patches:
        src = source[p.name]
        fns.setdefault(p.name, []).append(lambda x, point, p=p, src=src: _replace(x, src, p, point))
    return fns


def run_patched(
    model: Any,
    receiver: Mapping[str, Any],
    source: Mapping[str, Any] | Mapping[str, torch.Tensor],
    patches: Sequence[Patch | str],
    extra_hooks: Mapping[str, Any] | None = None,
) -> Any:
    """Run ``receiver`` with every patch applied at once (from a run on ``source``); returns the output.

    ``source`` is model inputs, or an :class:`~t5lab.explore.hooks.ActivationCache` / dict of
    activations already computed. A string patch is a hook point name at every position.
    """
    patches = [Patch(p) if isinstance(p, str) else p for p in patches]
    names = sorted({p.name for p in patches})
    if "input_ids" in source or "decoder_input_ids" in source or "inputs_embeds" in source:
        _check_same_length(receiver, source)
        source = run_with_cache(model, source, names, device=None)
    fns = _patch_hooks(patches, source)
    for name, fn in (extra_hooks or {}).items():
        fns.setdefault(name, []).insert(0, fn)
    with torch.no_grad(), hooks(model, fns):
        return model(**receiver)


def _sweep(
    model: Any,
    receiver: Mapping[str, Any],
    source_cache: Mapping[str, torch.Tensor],
    plan: list[tuple[str, str, str, bool]],
    metric: Metric,
    per_position: bool | None,
    receiver_value: float,
    source_value: float,
    extra_hooks: Mapping[str, Any] | None = None,
    window: int = 1,
) -> list[PatchRow]:
    rows = []
    span = source_value - receiver_value
    for comp, stack, suffix, per_head in plan:
        layers = _layers(model, stack)
        example = source_cache[f"{stack}.blocks.0.{suffix}"]
        length = example.shape[1]
        by_position = (not per_head) if per_position is None else per_position
        positions: list[int | None] = list(range(length)) if by_position else [None]
        heads: list[int | None] = list(range(example.shape[2])) if per_head else [None]
        for layer in range(layers):
            # a window of layers around `layer` (Meng et al. restore 10 MLP / attention layers at once)
            lo, hi = max(0, layer - window // 2), min(layers, layer - window // 2 + window)
            for head in heads:
                for pos in positions:
                    patches = [Patch(f"{stack}.blocks.{i}.{suffix}", pos, head) for i in range(lo, hi)]
                    out = run_patched(model, receiver, source_cache, patches, extra_hooks)
                    value = _scalar(metric(out))
                    effect = (value - receiver_value) / span if abs(span) > 1e-12 else float("nan")
                    rows.append(PatchRow(comp, stack, layer, pos, head, value, effect))
    return rows


def patch(
    model: Any,
    clean: Mapping[str, Any],
    corrupt: Mapping[str, Any],
    points: Any = DEFAULT_COMPONENTS,
    metric: Metric | None = None,
    *,
    per_position: bool | None = None,
    denoise: bool = False,
    tokens: dict[str, list[str]] | None = None,
) -> PatchResult:
    """Activation patching over layers x positions x components.

    Args:
        model: a T5-family model (eval mode).
        clean: model inputs of the clean example (with ``labels`` for the default metric; a
            seq2seq model's decoder input is taken from them for both runs).
        corrupt: model inputs of the corrupted example, the same token lengths.
        points: component names (``"resid_post"``, ``"decoder.cross_heads"``, ... see
            :data:`COMPONENTS`; without a stack prefix: every stack that has it).
        metric: ``metric(output) -> scalar``; default: mean log-probability of the clean labels.
        per_position: patch one position at a time (default: yes for residual-like components,
            no for heads).
        denoise: run ``corrupt`` and patch clean activations in (default: run ``clean``, patch
            corrupt ones in).
        tokens: ``{stack: tokens}`` to label positions in tables and heatmaps.

    Returns:
        A :class:`PatchResult` (``.table()``, ``.grid()``, ``.heatmaps(dir)``).

    Raises:
        T5LabError: unknown component, inputs of different token lengths, no labels for the
            default metric.
    """
    clean, corrupt = dict(clean), dict(corrupt)
    if "encoder" in model_stacks(model):  # the decoder reads the clean target in both runs
        for key in ("labels", "decoder_input_ids", "decoder_attention_mask"):
            if key in clean and key not in corrupt:
                corrupt[key] = clean[key]
    _check_same_length(clean, corrupt)
    if metric is None:
        metric = target_logprob(_labels(clean), _is_causal(model))
    plan = _expand(points, model)
    receiver, source = (corrupt, clean) if denoise else (clean, corrupt)
    names = [f"{s}.blocks.{i}.{suffix}" for _, s, suffix, _ in plan for i in range(_layers(model, s))]
    with torch.no_grad():
        receiver_value = _scalar(metric(model(**receiver)))
        source_cache = run_with_cache(model, source, names, device=None)
        source_value = _scalar(metric(source_cache.output))
    rows = _sweep(model, receiver, source_cache, plan, metric, per_position, receiver_value, source_value)
    names_of = ("corrupt", "clean") if denoise else ("clean", "corrupt")
    return PatchResult(rows, receiver_value, source_value, *names_of, tokens=dict(tokens or {}))


# ---------------------------------------------------------------------------------------------
# causal tracing
# ---------------------------------------------------------------------------------------------


def embedding_std(model: Any) -> float:
    """Standard deviation of the input embedding matrix's entries (the noise scale's unit)."""
    return float(model.get_input_embeddings().weight.detach().float().std())


def causal_trace(
    model: Any,
    inputs: Mapping[str, Any],
    noise_positions: Sequence[int],
    points: Any = ("resid_post", "attn_out", "cross_attn_out", "mlp_out"),
    metric: Metric | None = None,
    *,
    noise_stack: str | None = None,
    samples: int = 10,
    noise: float = 3.0,
    window: int = 1,
    seed: int = 0,
    tokens: dict[str, list[str]] | None = None,
) -> PatchResult:
    """Causal tracing (Meng et al. 2022) across the encoder, the decoder and the cross-attention.

    The corrupted run adds ``N(0, (noise * embedding_std)^2)`` to the input embeddings of
    ``noise_positions`` (in the encoder for seq2seq models, else in the decoder), ``samples``
    draws in one batch; each point is then restored to its clean value at one position (a
    ``window`` of layers for ``attn_out``/``mlp_out``-like components) and the metric averaged over
    the draws.

    Args:
        model: a T5-family model.
        inputs: one example's model inputs (batch 1) with ``labels`` for the default metric.
        noise_positions: token positions of the noised input (the "subject").
        points: components to restore (see :data:`COMPONENTS`).
        metric: default: mean probability of the target tokens.
        noise_stack: where the noise goes (default: ``encoder`` if the model has one).
        samples: noise draws (the paper uses 10).
        noise: noise scale in embedding standard deviations (the paper: 3).
        window: layers restored together around each layer (the paper: 10 for MLP / attention).
        seed: seeds the noise.
        tokens: ``{stack: tokens}`` to label positions.

    Returns:
        A :class:`PatchResult`: ``receiver`` is the noised run's metric, ``source`` the clean one,
        ``effect`` the fraction of the clean metric a restoration recovers.
    """
    inputs = dict(inputs)
    first = next(v for v in inputs.values() if torch.is_tensor(v))
    if first.shape[0] != 1:
        raise T5LabError(f"causal_trace takes one example (batch 1), got a batch of {first.shape[0]}")
    stacks = model_stacks(model)
    noise_stack = noise_stack or ("encoder" if "encoder" in stacks else "decoder")
    if noise_stack not in stacks:
        raise T5LabError(f"no {noise_stack!r} stack to put noise in; the model has {', '.join(stacks)}")
    length = inputs["input_ids"].shape[1] if noise_stack == "encoder" or "encoder" not in stacks else None
    if length is not None:
        bad = [p for p in noise_positions if not 0 <= p < length]
        if bad or not noise_positions:
            raise T5LabError(f"noise positions {list(noise_positions)} must be within 0..{length - 1}")
    if metric is None:
        metric = target_prob(_labels(inputs), _is_causal(model))
    plan = _expand(points, model)
    batch = {k: v.repeat(samples, *[1] * (v.dim() - 1)) if torch.is_tensor(v) else v for k, v in inputs.items()}
    generator = torch.Generator().manual_seed(seed)
    scale = noise * embedding_std(model)
    positions = list(noise_positions)
    drawn: dict[str, torch.Tensor] = {}

    def add_noise(x: torch.Tensor, point: HookPoint) -> torch.Tensor:
        if "noise" not in drawn:  # the same draws for every restoration
            draw = torch.randn((x.shape[0], len(positions), x.shape[-1]), generator=generator) * scale
            drawn["noise"] = draw.to(x)
        x = x.clone()
        x[:, positions] = x[:, positions] + drawn["noise"]
        return x

    noise_hook = {f"{noise_stack}.hook_embed": add_noise}
    names = [f"{s}.blocks.{i}.{suffix}" for _, s, suffix, _ in plan for i in range(_layers(model, s))]
    with torch.no_grad():
        clean_cache = run_with_cache(model, inputs, names, device=None)
        clean_value = _scalar(metric(clean_cache.output))
        with hooks(model, noise_hook):
            noised_value = _scalar(metric(model(**batch)))
    rows = []
    for item in plan:
        win = window if item[0] in ("attn_out", "cross_attn_out", "mlp_out") else 1
        rows += _sweep(model, batch, clean_cache, [item], metric, True, noised_value, clean_value, noise_hook, win)
    return PatchResult(rows, noised_value, clean_value, "noised", "clean", tokens=dict(tokens or {}))
