"""The explorer: load runs and models, sample, score, look inside (attention, hidden states, heads,
calls) and plot. Works for every variant (``t5``, ``pseudo_dec``, ``decoder_only``, ``enct5`` where
it applies, ``gpt2``, and registered ones) from a run directory or any HF model directory. See
docs/explorer.md.

The names resolve lazily (PEP 562), so that ``t5lab --help`` (which imports ``t5lab.explore.cli``)
loads neither torch nor transformers.
"""

from __future__ import annotations

from t5lab._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "AttentionMaps": "t5lab.explore.attention",
    "attention_maps": "t5lab.explore.attention",
    "sample": "t5lab.explore.generation",
    "ablate_heads": "t5lab.explore.heads",
    "attention_sites": "t5lab.explore.heads",
    "prune_heads": "t5lab.explore.heads",
    "Comparison": "t5lab.explore.plots",
    "compare": "t5lab.explore.plots",
    "plot_metrics": "t5lab.explore.plots",
    "MetricsTable": "t5lab.explore.run",
    "Run": "t5lab.explore.run",
    "load_run": "t5lab.explore.run",
    "HiddenStates": "t5lab.explore.scoring",
    "Perplexity": "t5lab.explore.scoring",
    "hidden_states": "t5lab.explore.scoring",
    "perplexity": "t5lab.explore.scoring",
    "Trace": "t5lab.explore.tracing",
    "trace": "t5lab.explore.tracing",
    # interpretability (docs/interpretability.md); the context manager is t5lab.explore.hooks.hooks
    # (a package attribute `hooks` would be shadowed by the submodule of that name once imported)
    "ActivationCache": "t5lab.explore.hooks",
    "hook_names": "t5lab.explore.hooks",
    "run_with_cache": "t5lab.explore.hooks",
    "Patch": "t5lab.explore.patching",
    "causal_trace": "t5lab.explore.patching",
    "encode_example": "t5lab.explore.patching",
    "encode_pairs": "t5lab.explore.patching",
    "patch": "t5lab.explore.patching",
    "plot_head_grids": "t5lab.explore.patching",
    "run_patched": "t5lab.explore.patching",
    "direct_logit_attribution": "t5lab.explore.lens",
    "logit_lens": "t5lab.explore.lens",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports("t5lab.explore", _LAZY, globals())
