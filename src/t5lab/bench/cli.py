"""`t5lab bench` sub-command."""

from __future__ import annotations

import argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="benchmark t5lab against the transformers reference")
    p.add_argument("cases", nargs="*", help="cases to run (default: all): lm_training enct5 fast_path generation ...")
    p.add_argument("--shape", choices=["tiny", "small"], default=None, help="model shape (default: per case)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per candidate")
    p.add_argument("--out", default="bench.json", help="JSON file for the raw numbers")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from t5lab.bench import format_table, run_bench

    rows = run_bench(args.cases, shape=args.shape, repeats=args.repeats, out=args.out)
    console = Console()
    console.print(format_table(rows))
    for r in rows:
        if r.extra:
            console.print(f"[dim]{r.case}/{r.candidate}: {r.extra}[/dim]")
    console.print(f"raw numbers: {args.out}")
    return 0
