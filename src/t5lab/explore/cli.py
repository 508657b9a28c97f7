"""``t5lab sample | eval | attn | plot | trace | compare``: parse, call the explorer API, print tables.

Heavy imports (torch, transformers, matplotlib) stay inside the command functions so that
``t5lab --help`` stays fast. Errors are :class:`~t5lab.errors.T5LabError`: one line, exit code 2.
"""

from __future__ import annotations

import argparse
from typing import Any


def _console() -> Any:
    import sys

    from rich.console import Console

    # piped output (logs, tests) gets a fixed width instead of rich's 80-column fallback
    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(v) for v in row])
    return table


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


_NO_VERIFY = "load the weights even if their sha256 differs from the run's manifest.json (t5lab.rundir)"


def add_commands(subparsers: Any) -> None:
    """Register the explorer's sub-commands."""
    p = subparsers.add_parser("sample", help="generate from a run or model directory")
    p.add_argument("run", metavar="RUN", help="run directory or model directory")
    p.add_argument("--prompt", action="append", required=True, help="prompt text; repeat for a batch")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--num-return-sequences", type=int, default=1)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-verify", action="store_true", help=_NO_VERIFY)
    p.set_defaults(func=cmd_sample)

    p = subparsers.add_parser("eval", help="loss, perplexity and accuracy of a run on a data split")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--verify", action="store_true", help="also check the stored val_loss is reproduced")
    p.add_argument("--no-verify", action="store_true", help=_NO_VERIFY)
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("attn", help="attention maps of one text as PNG grids (one panel per head)")
    p.add_argument("run", metavar="RUN", help="run directory or model directory")
    p.add_argument("--text", required=True)
    p.add_argument("--target", default=None, help="decoder text of a seq2seq model (default: its greedy output)")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the PNGs")
    p.add_argument("--layers", type=int, nargs="+", default=None)
    p.add_argument("--heads", type=int, nargs="+", default=None)
    p.set_defaults(func=cmd_attn)

    p = subparsers.add_parser("plot", help="plot metric curves of a run to a PNG")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--metrics", nargs="+", default=["val_loss", "train_loss"])
    p.add_argument("--x", default="step", choices=["step", "samples", "tokens", "epoch"])
    p.add_argument("--out", default=None, help="PNG path (default: RUN/metrics.png)")
    p.add_argument("--log-y", action="store_true")
    p.set_defaults(func=cmd_plot)

    p = subparsers.add_parser("trace", help="show the encoder/decoder calls and KV-cache growth of generate()")
    p.add_argument("run", metavar="MODEL_DIR", help="model directory or run directory")
    p.add_argument("--text", required=True)
    p.add_argument("--max-new-tokens", type=int, default=5)
    p.set_defaults(func=cmd_trace)

    p = subparsers.add_parser("compare", help="compare runs: one plot of their curves and a table")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--metric", default="val_loss")
    p.add_argument("--x", default="step", choices=["step", "samples", "tokens", "epoch"])
    p.add_argument("--threshold", type=float, default=None, help="level for 'steps to threshold'")
    p.add_argument("--out", default="compare.png", help="PNG path (default: compare.png)")
    p.add_argument("--no-measure", action="store_true", help="do not measure tokens/s when runs logged none")
    p.set_defaults(func=cmd_compare)


def cmd_sample(args: argparse.Namespace) -> int:
    from t5lab.explore import load_run, sample

    run = load_run(args.run, verify=False if args.no_verify else None)
    outputs = sample(
        run.model, run.tokenizer, list(args.prompt), max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, num_beams=args.num_beams,
        num_return_sequences=args.num_return_sequences, seed=args.seed,
    )
    rows = []
    for prompt, out in zip(args.prompt, outputs):
        for i, text in enumerate(out if isinstance(out, list) else [out]):
            rows.append([prompt if i == 0 else "", text])
    _console().print(_table(f"{run.name} ({run.variant})", ["prompt", "output"], rows))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from t5lab.errors import T5LabError
    from t5lab.explore import load_run

    run = load_run(args.run, verify=False if args.no_verify else None)
    if run.config is None:
        raise T5LabError(f"{args.run} is a model directory; eval needs a run directory (config.yaml) for its data splits")
    result = run.evaluate(args.split, args.batch_size)
    rows = [[k, v] for k, v in result.items()]
    if args.verify:
        check = run.verify_stable_load()
        rows += [["stored val_loss", check["stored"]], ["recomputed val_loss", check["recomputed"]], ["verified from", check["source"]]]
    _console().print(_table(f"{run.name} ({run.variant}) on {args.split}", ["metric", "value"], rows))
    return 0


def cmd_attn(args: argparse.Namespace) -> int:
    from t5lab.explore import attention_maps, load_run

    run = load_run(args.run)
    maps = attention_maps(run.model, run.tokenizer, args.text, layers=args.layers, heads=args.heads, out_dir=args.out, target=args.target)
    files = {f.name: f for f in maps.files}
    rows = []
    for kind, tensor in maps.maps.items():
        # mean attention entropy per layer (nats): near 0 = peaked heads, log(keys) = uniform
        probs = tensor.clamp_min(1e-12)
        entropy = -(probs * probs.log()).sum(-1).mean(dim=(1, 2))  # (L,)
        for li, layer in enumerate(maps.layers):
            shape = "x".join(map(str, tensor.shape[2:]))
            rows.append([kind, layer, shape, float(entropy[li]), str(files.get(f"{kind}_layer{layer}.png", "-"))])
    _console().print(_table(f"attention of {args.text!r}", ["kind", "layer", "queries x keys", "mean entropy", "png"], rows))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from t5lab.explore import load_run, plot_metrics

    run = load_run(args.run, load_model=False)
    out = args.out or str(Path(run.path) / "metrics.png")
    path = plot_metrics(run, args.metrics, out=out, x=args.x, log_y=args.log_y)
    rows = [[m, run.metrics.last(m), min(run.metrics.series(m)[1])] for m in args.metrics]
    console = _console()
    console.print(_table(f"{run.name}", ["metric", "last", "min"], rows))
    console.print(f"wrote {path}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from t5lab.explore import load_run, trace
    from t5lab.explore.generation import encode_prompts, generation_config

    run = load_run(args.run)
    model, tokenizer = run.model, run.tokenizer
    config = generation_config(model, tokenizer, args.max_new_tokens, temperature=0, min_new_tokens=args.max_new_tokens)
    enc = encode_prompts(model, tokenizer, [args.text])
    with trace(model) as tr:
        model.generate(**enc, generation_config=config)
    rows = [[e.index, e.part, "x".join(map(str, e.input_shape)), e.cache_length] for e in tr.events]
    console = _console()
    console.print(_table(f"generate() of {run.name} ({run.variant})", ["#", "part", "input (B x T)", "cache length"], rows))
    console.print(tr.summary())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from t5lab.explore import compare

    result = compare(args.runs, metric=args.metric, out=args.out, x=args.x, threshold=args.threshold, measure_throughput=not args.no_measure)
    rows = [[r.run, r.variant, r.params, r.tokens_per_s, r.best, r.best_step, r.steps_to_threshold] for r in result.rows]
    thr = "" if result.threshold is None else f" (threshold {result.threshold:.4g})"
    console = _console()
    console.print(_table(
        f"{args.metric}{thr}",
        ["run", "variant", "params", "tokens/s", f"best {args.metric}", "at step", "steps to threshold"],
        rows,
    ))
    console.print(f"wrote {result.out}")
    return 0
