"""Attention maps (encoder self, decoder self, cross) as tensors and as PNG grids."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from t5lab.errors import T5LabError
from t5lab.explore._common import CAUSAL, CLASSIFIER, SEQ2SEQ, device_of, model_kind, tokenize
from t5lab.explore.generation import encode_prompts


@dataclass
class AttentionMaps:
    """Attention probabilities of one text, per kind.

    Attributes:
        maps: ``{"encoder": (L, H, T, T), "decoder": (L, H, S, S), "cross": (L, H, S, T)}`` for the
            kinds the model has (a causal LM has only ``"decoder"``), restricted to the chosen
            ``layers`` and ``heads``.
        layers: the layer indices along dim 0.
        heads: the head indices along dim 1.
        source_tokens: the encoder tokens (or the causal LM's tokens).
        target_tokens: the decoder input tokens of a seq2seq model (start token + target).
        files: the PNG files written (``out_dir``).
    """

    maps: dict[str, torch.Tensor]
    layers: list[int]
    heads: list[int]
    source_tokens: list[str]
    target_tokens: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def __getitem__(self, kind: str) -> torch.Tensor:
        return self.maps[kind]


@contextmanager
def eager_attention(model: Any) -> Iterator[Any]:
    """Switch a model to eager attention (the only one that returns weights), then switch back."""
    old = getattr(model.config, "_attn_implementation", None)
    if old in (None, "eager"):
        yield model
        return
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(old)


def _check_range(what: str, chosen: Sequence[int] | None, n: int) -> list[int]:
    if chosen is None:
        return list(range(n))
    chosen = [int(c) for c in chosen]
    bad = [c for c in chosen if not -n <= c < n]
    if bad:
        raise T5LabError(f"{what} {bad} out of range: the model has {what}s 0..{n - 1}")
    return [c % n for c in chosen]


@torch.no_grad()
def attention_maps(
    model: Any,
    tokenizer: Any,
    text: str,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    out_dir: str | os.PathLike | None = None,
    target: str | None = None,
    max_new_tokens: int = 16,
) -> AttentionMaps:
    """Attention probabilities of every layer and head for one text, and optional PNG grids.

    Runs the model with eager attention (sdpa does not return weights). For a seq2seq model the
    decoder reads ``target`` when given, else the model's own greedy output for ``text``.

    Args:
        model: a T5-family or GPT-2 model.
        tokenizer: its tokenizer.
        text: the input text.
        layers: layer indices to keep (default: all).
        heads: head indices to keep (default: all).
        out_dir: when given, writes ``<kind>_layer<N>.png`` there, one panel per head.
        target: decoder text for seq2seq models.
        max_new_tokens: length of the greedy output used when ``target`` is None.

    Returns:
        An :class:`AttentionMaps`.

    Raises:
        T5LabError: a layer or head out of range.
    """
    kind = model_kind(model)
    device = device_of(model)
    # `text </s>` as training encodes an input (a prefix LM also gets its prefix_mask)
    enc = encode_prompts(model, tokenizer, [text]) if kind != CLASSIFIER else tokenize(tokenizer, [text], device=device)
    src_tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    tgt_tokens: list[str] = []
    kwargs: dict[str, Any] = {}
    if kind == SEQ2SEQ:
        if target is None:
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
            dec_in = out[:, :-1] if out.shape[1] > 1 else out  # (1, S): start token + generated tokens
        else:
            labels = tokenize(tokenizer, [target], device=device)["input_ids"]
            dec_in = model._shift_right(labels)
        kwargs["decoder_input_ids"] = dec_in
        tgt_tokens = tokenizer.convert_ids_to_tokens(dec_in[0])
    with eager_attention(model):
        out = model(**enc, **kwargs, output_attentions=True)
    if kind == SEQ2SEQ:
        raw = {"encoder": out.encoder_attentions, "decoder": out.decoder_attentions, "cross": out.cross_attentions}
    elif kind == CAUSAL:
        raw = {"decoder": out.attentions}
    else:
        raw = {"encoder": getattr(out, "encoder_attentions", None) or getattr(out, "attentions", None)}
        if getattr(out, "decoder_attentions", None):
            raw["decoder"] = out.decoder_attentions
        if getattr(out, "cross_attentions", None):
            raw["cross"] = out.cross_attentions
    raw = {k: v for k, v in raw.items() if v}
    if not raw:
        raise T5LabError(f"{type(model).__name__} returned no attention weights; is it a T5-family model?")
    n_layers = min(len(v) for v in raw.values())
    n_heads = min(v[0].shape[1] for v in raw.values())
    layer_ids = _check_range("layer", layers, n_layers)
    head_ids = _check_range("head", heads, n_heads)
    maps = {
        k: torch.stack([v[i][0] for i in layer_ids])[:, head_ids].float().cpu()  # (L, H, Tq, Tk)
        for k, v in raw.items()
    }
    result = AttentionMaps(maps, layer_ids, head_ids, src_tokens, tgt_tokens)
    if out_dir is not None:
        result.files = save_attention_pngs(result, out_dir)
    return result


def save_attention_pngs(maps: AttentionMaps, out_dir: str | os.PathLike) -> list[Path]:
    """Write one PNG per kind and layer, with one panel per head and tokens on the axes."""
    from t5lab.explore.plots import atomic_savefig, pyplot

    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    causal_only = set(maps.maps) == {"decoder"} and not maps.target_tokens
    for kind, tensor in maps.maps.items():
        queries = maps.source_tokens if kind == "encoder" or causal_only else maps.target_tokens
        keys = maps.source_tokens if kind in ("encoder", "cross") or causal_only else maps.target_tokens
        for li, layer in enumerate(maps.layers):
            n = len(maps.heads)
            cols = min(n, 4)
            rows = (n + cols - 1) // cols
            # panels sized by their token counts, so that cells stay square and labels readable
            width, height = 1.2 + 0.22 * len(keys), 1.0 + 0.22 * len(queries)
            fig, axes = plt.subplots(
                rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False, layout="constrained"
            )
            vmax = float(tensor[li].max())  # one colour scale per figure: heads are comparable
            for ax in axes.flat[n:]:
                ax.axis("off")
            for hi, head in enumerate(maps.heads):
                ax = axes.flat[hi]
                image = ax.imshow(tensor[li, hi].numpy(), vmin=0.0, vmax=vmax, cmap="viridis")
                ax.set_title(f"head {head}", fontsize=9)
                ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=7)
                ax.set_yticks(range(len(queries)), queries, fontsize=7)
            fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label="attention probability")
            fig.suptitle(f"{kind} attention, layer {layer} (rows: queries, columns: keys)")
            path = out_dir / f"{kind}_layer{layer}.png"
            atomic_savefig(fig, path)
            plt.close(fig)
            files.append(path)
    return files
