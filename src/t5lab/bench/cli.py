"""`t5lab bench` sub-command."""

from __future__ import annotations

import argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="benchmark t5lab against the transformers reference")
    p.add_argument("cases", nargs="*", help="cases to run (default: all): lm_training enct5 fast_path generation overhead copy_time hooks")
    p.add_argument("--shape", choices=["tiny", "small"], default=None, help="model shape (default: per case)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per candidate")
    p.add_argument("--out", default="bench.json", help="JSON file for the raw numbers")
    p.add_argument("--markdown", default=None, help="also write the table as Markdown to this file")
    p.add_argument("--variants", default=None, metavar="NAME,...",
                   help="LM variants of lm_training and generation (default: pseudo_dec,decoder_only; "
                        "registered ones too, with t5lab --import)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 avoids spin-wait contention on a busy machine)")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from t5lab.bench import format_table, run_bench
    from t5lab.errors import T5LabError

    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise T5LabError(f"--threads {args.threads}: give a positive number of threads")
        torch.set_num_threads(args.threads)
    options = {}
    if args.variants:
        from t5lab.bench.cases import bench_variant

        names = tuple(v.strip() for v in args.variants.split(",") if v.strip())
        for name in names:
            try:
                bench_variant(name.removesuffix("+logits_to_keep"))
            except ValueError as err:
                raise T5LabError(f"--variants: {err}") from None
        options = {"lm_training": {"variants": names}, "generation": {"variants": tuple(n.removesuffix("+logits_to_keep") for n in names)}}
    rows = run_bench(args.cases, shape=args.shape, repeats=args.repeats, out=args.out, **options)
    if args.markdown:
        from t5lab.bench import markdown_table
        from t5lab.train.io import atomic_write_text

        atomic_write_text(args.markdown, markdown_table(rows) + "\n")
    console = Console()
    console.print(format_table(rows))
    for r in rows:
        if r.extra:
            console.print(f"[dim]{r.case}/{r.candidate}: {r.extra}[/dim]")
    console.print(f"raw numbers: {args.out}")
    return 0
