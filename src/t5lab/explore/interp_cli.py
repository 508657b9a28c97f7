"""``t5lab patch | lens | causal-trace``: interpretability of a run from the command line.

Texts are encoded as training encodes them (:mod:`t5lab.formulation`): a seq2seq model reads
``text </s>`` and is teacher-forced on ``target </s>``; a decoder-only model reads
``text </s> target </s>``. Without ``--target`` the target is the model's own greedy output for
the (clean) text. PNGs go to ``--out`` (default ``RUN/interp``); tables are printed. Errors are
:class:`~t5lab.errors.T5LabError`: one line, exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# t5lab.explore.patching's COMPONENTS / DEFAULT_COMPONENTS, spelled out so that `t5lab --help`
# imports no torch (tests/explore/test_patching.py checks that they agree)
COMPONENTS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "cross_attn_out", "mlp_out", "heads", "cross_heads")
DEFAULT_COMPONENTS = ("resid_post", "attn_out", "cross_attn_out", "mlp_out", "heads", "cross_heads")


def add_commands(subparsers: Any) -> None:
    """Register ``patch``, ``lens`` and ``causal-trace``."""
    p = subparsers.add_parser("patch", help="activation patching: which layers, positions and heads carry the difference")
    p.add_argument("run", metavar="RUN", help="run directory or model directory")
    p.add_argument("--clean", required=True, help="clean input text")
    p.add_argument("--corrupt", required=True, help="corrupted input text (same token length)")
    p.add_argument("--target", default=None, help="target text (default: the model's greedy output for --clean)")
    p.add_argument("--components", nargs="+", default=list(DEFAULT_COMPONENTS), metavar="C",
                   help=f"components, optionally 'encoder.'/'decoder.' first: {', '.join(COMPONENTS)}")
    p.add_argument("--denoise", action="store_true", help="run corrupt and restore clean activations (default: the reverse)")
    p.add_argument("--all-positions", action="store_true", help="patch all positions at once (default: one at a time)")
    p.add_argument("--top", type=int, default=15, help="rows of the printed table")
    p.add_argument("--out", default=None, metavar="DIR", help="directory for the PNGs (default: RUN/interp)")
    p.set_defaults(func=cmd_patch)

    p = subparsers.add_parser("lens", help="logit lens and direct logit attribution of the decoder")
    p.add_argument("run", metavar="RUN", help="run directory or model directory")
    p.add_argument("--text", required=True, help="input text")
    p.add_argument("--target", default=None, help="target text (default: the model's greedy output)")
    p.add_argument("--position", type=int, default=None, help="attribute at this decoder position (default: summed)")
    p.add_argument("--out", default=None, metavar="DIR", help="directory for the PNGs (default: RUN/interp)")
    p.set_defaults(func=cmd_lens)

    p = subparsers.add_parser("causal-trace", help="causal tracing (Meng et al. 2022): noise input tokens, restore states")
    p.add_argument("run", metavar="RUN", help="run directory or model directory")
    p.add_argument("--text", required=True, help="input text")
    p.add_argument("--target", default=None, help="target text (default: the model's greedy output)")
    p.add_argument("--noise", type=int, nargs="+", required=True, metavar="POS", help="input token positions to noise")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--window", type=int, default=1, help="layers restored together for attn/mlp outputs")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--out", default=None, metavar="DIR", help="directory for the PNGs (default: RUN/interp)")
    p.set_defaults(func=cmd_causal_trace)


def _out_dir(args: argparse.Namespace, run: Any) -> Path:
    return Path(args.out) if args.out else Path(run.path) / "interp"


def _print_rows(title: str, result: Any, top: int) -> None:
    from t5lab.explore.cli import _console, _table

    rows = [
        [r.stack, r.component, r.layer, "all" if r.position is None else r.position, "-" if r.head is None else r.head, r.value, r.effect]
        for r in result.top(top)
    ]
    console = _console()
    console.print(f"{result.receiver_name} metric {result.receiver:.4f}, {result.source_name} metric {result.source:.4f}")
    console.print(_table(title, ["stack", "component", "layer", "position", "head", "metric", "effect"], rows))
    for path in result.files:
        console.print(f"wrote {path}")


def cmd_patch(args: argparse.Namespace) -> int:
    from t5lab.explore import load_run
    from t5lab.explore.patching import encode_example, patch

    run = load_run(args.run)
    model, tokenizer = run.model, run.tokenizer
    clean, tokens, target = encode_example(model, tokenizer, args.clean, args.target)
    corrupt, _, _ = encode_example(model, tokenizer, args.corrupt, target)
    result = patch(model, clean, corrupt, args.components, per_position=False if args.all_positions else None,
                   denoise=args.denoise, tokens=tokens)
    result.heatmaps(_out_dir(args, run), prefix="patch")
    _print_rows(f"patching {args.clean!r} vs {args.corrupt!r} -> {target!r} (metric: mean log p(target))", result, args.top)
    return 0


def cmd_lens(args: argparse.Namespace) -> int:
    from t5lab.explore import load_run
    from t5lab.explore.cli import _console, _table
    from t5lab.explore.lens import direct_logit_attribution, logit_lens
    from t5lab.explore.patching import encode_example

    run = load_run(args.run)
    model, tokenizer = run.model, run.tokenizer
    inputs, tokens, target = encode_example(model, tokenizer, args.text, args.target)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    lens = logit_lens(model, inputs, tokens=tokens["decoder"], vocab=vocab)
    dla = direct_logit_attribution(model, inputs, tokens=tokens["decoder"])
    out = _out_dir(args, run)
    out.mkdir(parents=True, exist_ok=True)
    files = [lens.heatmap(out / "lens.png"), dla.plot(out / "dla.png", position=args.position)]
    console = _console()
    means = lens.target_logprobs.nanmean(dim=1).tolist()
    rows = [[name, means[i], " ".join(vocab[int(t)] for t in lens.top[i])] for i, name in enumerate(lens.layers)]
    console.print(_table(f"logit lens of {args.text!r} -> {target!r}", ["layer", "mean log p(target)", "top token per position"], rows))
    contrib, heads, logit = dla._select(args.position)
    rows = [[name, float(v), ", ".join(f"H{h} {x:+.3f}" for h, x in enumerate(heads[name].tolist())) if name in heads else ""]
            for name, v in zip(dla.components, contrib.tolist())]
    where = "summed over target positions" if args.position is None else f"at position {args.position}"
    console.print(_table(f"direct logit attribution (target logit {logit:.4f}, {where})", ["component", "contribution", "per head"], rows))
    for path in files:
        console.print(f"wrote {path}")
    return 0


def cmd_causal_trace(args: argparse.Namespace) -> int:
    from t5lab.explore import load_run
    from t5lab.explore.patching import causal_trace, encode_example

    run = load_run(args.run)
    model, tokenizer = run.model, run.tokenizer
    inputs, tokens, target = encode_example(model, tokenizer, args.text, args.target)
    result = causal_trace(model, inputs, args.noise, samples=args.samples, window=args.window, tokens=tokens)
    result.heatmaps(_out_dir(args, run), prefix="trace")
    _print_rows(f"causal trace of {args.text!r} -> {target!r}, noise on positions {args.noise} (metric: p(target))", result, args.top)
    return 0
