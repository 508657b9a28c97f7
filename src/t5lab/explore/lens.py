"""Logit lens and direct logit attribution on the decoder of every T5 LM variant.

Logit lens (nostalgebraist 2020, "interpreting GPT: the logit lens",
https://www.lesswrong.com/posts/AcKRB8wDpdaN6v6ru): read the residual stream after each decoder
block through the model's own output path, ``lm_head(final_layer_norm(x) * s)``, where ``s`` is
T5's ``d_model ** -0.5`` output scaling when the model uses it (tied head:
``config.scale_decoder_outputs``, else ``tie_word_embeddings``; T5 v1.1 does not scale) and 1
otherwise. The last layer's lens *is* the model's logits.

Direct logit attribution (Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits", https://transformer-circuits.pub/2021/framework): T5's sub-layers only add to the
residual stream, so the decoder's final residual is exactly

    x = embed + sum_l (attn_out_l + cross_attn_out_l + mlp_out_l),   attn_out_l = sum_h result_{l,h}

(eval mode: dropout is the identity). The final RMS norm ``w * x / rms(x)`` is not linear in
``x``; we **linearise it by freezing its scale** ``r = 1 / rms(x)`` at the value of the actual
final residual of this input (``ln_final.hook_scale``, one number per position), as
TransformerLens's ``apply_ln_to_stack`` does with a cached scale. Then the target token's logit is
the linear function ``s * r * (W_U[target] * w) . x``, and each component's contribution is that
function applied to the component; the contributions add up exactly (up to float rounding) to the
logit. With a ``baseline`` token the direction is ``W_U[target] - W_U[baseline]`` (logit
difference).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from t5lab.errors import T5LabError
from t5lab.explore.hooks import hook_names, model_stacks, run_with_cache


def output_scale(model: Any) -> float:
    """The factor T5 applies to the decoder output before the LM head: ``d_model ** -0.5`` or 1."""
    config = model.config
    scaled = getattr(config, "scale_decoder_outputs", getattr(config, "tie_word_embeddings", True))
    return float(config.d_model) ** -0.5 if scaled else 1.0


def _lm_head(model: Any) -> torch.nn.Linear:
    head = getattr(model, "lm_head", None)
    if not isinstance(head, torch.nn.Linear):
        raise T5LabError(
            f"{type(model).__name__} has no LM head (lm_head); the logit lens reads the decoder through it "
            "(EncT5 classifies: patch its logits instead)"
        )
    return head


def unembed(model: Any, normalized: torch.Tensor) -> torch.Tensor:
    """Logits of final-norm outputs ``(..., D)``: ``lm_head(normalized * output_scale)``."""
    head = _lm_head(model)
    return head(normalized.to(head.weight.dtype) * output_scale(model))


def _single(inputs: dict[str, Any]) -> None:
    first = next(v for v in inputs.values() if torch.is_tensor(v))
    if first.shape[0] != 1:
        raise T5LabError(f"the lens reads one example (batch 1), got a batch of {first.shape[0]}")


def aligned_targets(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """The token each decoder position predicts, ``(T,)`` with -100 where nothing is scored.

    Seq2seq: ``labels[t]`` at decoder position t. Causal LM: ``labels[t + 1]`` (labels not shifted).
    """
    labels = inputs.get("labels")
    if labels is None:
        raise T5LabError("give labels (the target) so that each decoder position has a token to read")
    labels = labels[0]
    if "encoder" in model_stacks(model):
        return labels
    return torch.cat([labels[1:], labels.new_full((1,), -100)])


@dataclass
class LensResult:
    """The logit lens of one example.

    Attributes:
        layers: row labels: ``"embed"``, then ``"L0"`` ... (after each block).
        logprobs: ``(L + 1, T, V)`` log-probabilities read at each layer and decoder position.
        targets: ``(T,)`` the predicted token per position (-100: none).
        tokens: decoder position labels (token strings), if known.
        vocab: token strings by id (for top-token labels), if known.
    """

    layers: list[str]
    logprobs: torch.Tensor
    targets: torch.Tensor
    tokens: list[str] = field(default_factory=list)
    vocab: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def target_logprobs(self) -> torch.Tensor:
        """``(L + 1, T)``: log-probability of each position's target at each layer (NaN where none)."""
        safe = self.targets.clamp_min(0)
        picked = self.logprobs.gather(-1, safe[None, :, None].expand(len(self.layers), -1, 1))[..., 0]
        return picked.masked_fill((self.targets < 0)[None], float("nan"))

    @property
    def top(self) -> torch.Tensor:
        """``(L + 1, T)`` the top token id at each layer and position."""
        return self.logprobs.argmax(-1)

    def _name(self, token_id: int) -> str:
        return self.vocab[token_id] if 0 <= token_id < len(self.vocab) else str(token_id)

    def table(self) -> str:
        """One row per layer: the top token at each position, and the mean target log-prob."""
        lines = [f"{'layer':<6} {'mean target logp':>16}  top tokens"]
        means = torch.nanmean(self.target_logprobs, dim=1)
        for i, name in enumerate(self.layers):
            tops = " ".join(self._name(int(t)) for t in self.top[i])
            lines.append(f"{name:<6} {float(means[i]):>16.4f}  {tops}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def heatmap(self, path: str | os.PathLike) -> Path:
        """Target log-probability per layer x position, each cell labelled with the top token."""
        from t5lab.explore.plots import atomic_savefig, pyplot

        plt = pyplot()
        grid = self.target_logprobs.numpy()
        length = grid.shape[1]
        fig, ax = plt.subplots(figsize=(1.6 + 0.55 * length, 1.0 + 0.4 * len(self.layers)), layout="constrained")
        image = ax.imshow(grid, cmap="viridis", aspect="auto", vmax=0.0)
        for i in range(len(self.layers)):
            for j in range(length):
                ax.text(j, i, self._name(int(self.top[i, j])), ha="center", va="center", fontsize=7, color="white")
        cols = [f"{j}:{self.tokens[j]}" if j < len(self.tokens) else str(j) for j in range(length)]
        ax.set_xticks(range(length), cols, rotation=90, fontsize=7)
        ax.set_yticks(range(len(self.layers)), self.layers, fontsize=8)
        ax.set_xlabel("decoder position (input token)")
        fig.colorbar(image, ax=ax, label="log p(target)")
        ax.set_title("logit lens: log p(target) per layer; text = top token", fontsize=9)
        out = atomic_savefig(fig, Path(path))
        plt.close(fig)
        self.files.append(out)
        return out


def _resid_names(layers: int) -> list[str]:
    return ["decoder.blocks.0.hook_resid_pre", *[f"decoder.blocks.{i}.hook_resid_post" for i in range(layers)]]


@torch.no_grad()
def logit_lens(model: Any, inputs: dict[str, Any], tokens: list[str] | None = None, vocab: list[str] | None = None) -> LensResult:
    """Read the decoder's residual stream after every block through the final norm and LM head.

    Args:
        model: a T5-family LM (``t5``, ``pseudo_dec``, ``decoder_only``, value-head models).
        inputs: one example's model inputs with ``labels``.
        tokens: labels of the decoder positions (for the heatmap).
        vocab: token strings by id (for top-token labels).
    """
    inputs = dict(inputs)
    _single(inputs)
    _lm_head(model)
    layers = len(model_stacks(model)["decoder"].block)
    names = _resid_names(layers)
    cache = run_with_cache(model, inputs, names, device=None)
    norm = model_stacks(model)["decoder"].final_layer_norm
    resid = torch.stack([cache[n][0] for n in names])  # (L + 1, T, D)
    logits = unembed(model, norm(resid)).float()  # each layer with its own RMS scale (the plain lens)
    return LensResult(
        ["embed", *[f"L{i}" for i in range(layers)]],
        torch.log_softmax(logits, -1).cpu(),
        aligned_targets(model, inputs).cpu(),
        list(tokens or []),
        list(vocab or []),
    )


@dataclass
class Attribution:
    """Direct logit attribution of one example: each component's share of the target logit.

    Attributes:
        components: ``["embed", "L0.attn", "L0.cross_attn", "L0.mlp", ...]``.
        contributions: ``(C, T)`` per component and decoder position (0 where nothing is scored).
        heads: ``{"L0.attn": (H, T), "L0.cross_attn": (H, T), ...}`` per-head shares (they sum to
            the component's row).
        logit: ``(T,)`` the model's target logit (or logit difference) at each position.
        targets: ``(T,)`` target ids (-100: not scored).
    """

    components: list[str]
    contributions: torch.Tensor
    heads: dict[str, torch.Tensor]
    logit: torch.Tensor
    targets: torch.Tensor
    tokens: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def _select(self, position: int | None) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        scored = self.targets >= 0
        if position is None:
            return self.contributions[:, scored].sum(1), {k: v[:, scored].sum(1) for k, v in self.heads.items()}, float(self.logit[scored].sum())
        if not 0 <= position < len(self.targets):
            raise T5LabError(f"position {position} out of range 0..{len(self.targets) - 1}")
        return self.contributions[:, position], {k: v[:, position] for k, v in self.heads.items()}, float(self.logit[position])

    def table(self, position: int | None = None) -> str:
        """Components by contribution (summed over scored positions, or at ``position``)."""
        contrib, heads, logit = self._select(position)
        where = "summed over target positions" if position is None else f"at position {position}"
        lines = [f"target logit {logit:.4f} ({where}) = sum of the contributions below", f"{'component':<16} {'contribution':>12}"]
        for name, value in zip(self.components, contrib.tolist()):
            lines.append(f"{name:<16} {value:>12.4f}")
            if name in heads:
                per = ", ".join(f"H{h} {v:+.3f}" for h, v in enumerate(heads[name].tolist()))
                lines.append(f"{'':<16} {per}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | os.PathLike, position: int | None = None) -> Path:
        """Bar chart of the components and a layers x heads heatmap per attention kind."""
        from t5lab.explore.plots import atomic_savefig, pyplot

        plt = pyplot()
        contrib, heads, logit = self._select(position)
        kinds = [k for k in ("attn", "cross_attn") if any(n.endswith("." + k) for n in heads)]
        fig, axes = plt.subplots(1, 1 + len(kinds), figsize=(4.5 + 3.2 * len(kinds), 0.6 + 0.28 * len(self.components)),
                                 squeeze=False, layout="constrained")
        ax = axes[0, 0]
        ax.barh(range(len(self.components)), contrib.numpy(), color=["C3" if v < 0 else "C0" for v in contrib.tolist()])
        ax.set_yticks(range(len(self.components)), self.components, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("contribution to the target logit")
        ax.set_title(f"direct logit attribution (logit {logit:.2f})", fontsize=9)
        for ax, kind in zip(axes[0, 1:], kinds):
            rows = [n for n in heads if n.endswith("." + kind)]
            grid = torch.stack([heads[n] for n in rows]).numpy()
            bound = float(abs(grid).max()) or 1.0
            image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
            ax.set_yticks(range(len(rows)), [n.split(".")[0] for n in rows], fontsize=7)
            ax.set_xticks(range(grid.shape[1]), [f"H{h}" for h in range(grid.shape[1])], fontsize=7)
            ax.set_title(f"{kind} heads", fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.8)
        out = atomic_savefig(fig, Path(path))
        plt.close(fig)
        self.files.append(out)
        return out


@torch.no_grad()
def direct_logit_attribution(
    model: Any,
    inputs: dict[str, Any],
    target: int | None = None,
    baseline: int | None = None,
    tokens: list[str] | None = None,
) -> Attribution:
    """Split each decoder position's target logit into embedding, attention (per head),
    cross-attention (per head) and MLP contributions, through the frozen final-norm scale.

    Args:
        model: a T5-family LM.
        inputs: one example's model inputs (``labels`` give each position's target).
        target: one token id scored at every position instead of the labels.
        baseline: a token id whose logit is subtracted (logit-difference attribution).
        tokens: decoder position labels.
    """
    inputs = dict(inputs)
    _single(inputs)
    head = _lm_head(model)
    decoder = model_stacks(model)["decoder"]
    layers = len(decoder.block)
    names = ["decoder.blocks.0.hook_resid_pre", "decoder.ln_final.hook_scale"]
    kinds = [("attn", "attn"), ("cross_attn", "cross_attn")]
    known = set(hook_names(model))
    for i in range(layers):
        for kind, _ in kinds:
            if f"decoder.blocks.{i}.{kind}.hook_result" in known:
                names += [f"decoder.blocks.{i}.{kind}.hook_attn_out", f"decoder.blocks.{i}.{kind}.hook_result"]
        names.append(f"decoder.blocks.{i}.mlp.hook_mlp_out")
    cache = run_with_cache(model, inputs, names, device=None)
    if target is None:
        targets = aligned_targets(model, inputs)
    else:  # one token at every decoder position
        targets = torch.full((cache["decoder.blocks.0.hook_resid_pre"].shape[1],), int(target))
    safe = targets.clamp_min(0).to(head.weight.device)
    direction = head.weight[safe].float()  # (T, D): the target's unembedding row
    if baseline is not None:
        direction = direction - head.weight[int(baseline)].float()
    # linearised final norm: w * x * r with r frozen at this input's value, then T5's output scale
    scale = cache["decoder.ln_final.hook_scale"][0].float()  # (T, 1)
    direction = direction * decoder.final_layer_norm.weight.float() * scale * output_scale(model)  # (T, D)

    def share(x: torch.Tensor) -> torch.Tensor:  # (T, D) or (T, H, D) -> (T,) or (H, T)
        x = x.float()
        return (x * direction).sum(-1) if x.dim() == 2 else (x * direction[:, None]).sum(-1).T

    components, rows, per_head = ["embed"], [share(cache["decoder.blocks.0.hook_resid_pre"][0])], {}
    for i in range(layers):
        for kind, label in kinds:
            name = f"decoder.blocks.{i}.{kind}.hook_attn_out"
            if name in cache:
                components.append(f"L{i}.{label}")
                rows.append(share(cache[name][0]))
                per_head[f"L{i}.{label}"] = share(cache[f"decoder.blocks.{i}.{kind}.hook_result"][0])
        components.append(f"L{i}.mlp")
        rows.append(share(cache[f"decoder.blocks.{i}.mlp.hook_mlp_out"][0]))
    if getattr(head, "bias", None) is not None:
        components.append("lm_head.bias")
        bias = head.bias[safe].float() - (head.bias[int(baseline)].float() if baseline is not None else 0.0)
        rows.append(bias)
    logits = cache.output["logits"][0].float()  # (T, V)
    logit = logits.gather(-1, safe[:, None])[:, 0]
    if baseline is not None:
        logit = logit - logits[:, int(baseline)]
    scored = (targets >= 0).to(logit.device)
    contributions = torch.stack(rows) * scored  # (C, T)
    return Attribution(
        components, contributions.cpu(), {k: (v * scored).cpu() for k, v in per_head.items()},
        (logit * scored).cpu(), targets.cpu(), list(tokens or []),
    )
