"""The explorer: load runs and models, sample, score, look inside (attention, hidden states, heads,
calls) and plot. Works for every variant (``t5``, ``pseudo_dec``, ``decoder_only``, ``enct5`` where
it applies, ``gpt2``) from a run directory or any HF model directory. See docs/explorer.md.
"""

from t5lab.explore.attention import AttentionMaps, attention_maps
from t5lab.explore.generation import sample
from t5lab.explore.heads import ablate_heads, attention_sites, prune_heads
from t5lab.explore.plots import Comparison, compare, plot_metrics
from t5lab.explore.run import MetricsTable, Run, load_run
from t5lab.explore.scoring import HiddenStates, Perplexity, hidden_states, perplexity
from t5lab.explore.tracing import Trace, trace

__all__ = [
    "AttentionMaps",
    "Comparison",
    "HiddenStates",
    "MetricsTable",
    "Perplexity",
    "Run",
    "Trace",
    "ablate_heads",
    "attention_maps",
    "attention_sites",
    "compare",
    "hidden_states",
    "load_run",
    "perplexity",
    "plot_metrics",
    "prune_heads",
    "sample",
    "trace",
]
