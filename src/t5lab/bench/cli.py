"""`t5lab bench` sub-command."""

from __future__ import annotations

import argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="benchmark t5lab against the transformers reference")
    p.add_argument("cases", nargs="*", help="cases to run (default: all but time_to_accuracy, which runs only when named): "
                   "lm_training enct5 fast_path generation overhead copy_time hooks time_to_accuracy")
    p.add_argument("--shape", choices=["tiny", "small"], default=None, help="model shape (default: per case)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per candidate")
    p.add_argument("--out", default="bench.json", help="JSON file for the raw numbers")
    p.add_argument("--markdown", default=None, help="also write the table as Markdown to this file")
    p.add_argument("--variants", default=None, metavar="NAME,...",
                   help="LM variants of lm_training and generation (default: pseudo_dec,decoder_only; "
                        "registered ones too, with t5lab --import); of time_to_accuracy (default: t5,pseudo_dec,decoder_only,gpt2)")
    p.add_argument("--tasks", default=None, metavar="NAME,...",
                   help="time_to_accuracy: original tasks (default: copy,sort,histogram,doublehistogram,numbersort,long_addition)")
    p.add_argument("--time-cap", type=float, default=None, metavar="S",
                   help="time_to_accuracy: wall-time cap per side of a cell in seconds (default: 150)")
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
    options: dict = {}
    tta = "time_to_accuracy" in args.cases
    lm_cases = not args.cases or bool({"lm_training", "generation"} & set(args.cases))
    if args.variants and lm_cases:
        from t5lab.bench.cases import bench_variant

        names = tuple(v.strip() for v in args.variants.split(",") if v.strip())
        for name in names:
            try:
                bench_variant(name.removesuffix("+logits_to_keep"))
            except ValueError as err:
                raise T5LabError(f"--variants: {err}") from None
        options = {"lm_training": {"variants": names}, "generation": {"variants": tuple(n.removesuffix("+logits_to_keep") for n in names)}}
    if tta:
        from t5lab.bench.tta import DEFAULT_TIME_CAP_S, check_choices

        tasks, variants = check_choices(args.tasks, args.variants)  # before any run: one-line errors
        options["time_to_accuracy"] = {"tasks": tasks, "variants": variants,
                                       "time_cap_s": DEFAULT_TIME_CAP_S if args.time_cap is None else args.time_cap}
    elif args.tasks or args.time_cap is not None:
        raise T5LabError("--tasks / --time-cap: options of the time_to_accuracy case; name it (t5lab bench time_to_accuracy ...)")
    rows = run_bench(args.cases, shape=args.shape, repeats=args.repeats, out=args.out, **options)
    from t5lab.bench import tta as tta_table

    others = [r for r in rows if r.case != tta_table.CASE]
    if args.markdown:
        from t5lab.bench import markdown_table
        from t5lab.train.io import atomic_write_text

        parts = [markdown_table(others)] if others else []
        if tta:
            parts.append(tta_table.markdown(rows, command=_command(args)))
        atomic_write_text(args.markdown, "\n\n".join(parts) + "\n")
    console = Console()
    if others:
        console.print(format_table(others))
        for r in others:
            if r.extra:
                console.print(f"[dim]{r.case}/{r.candidate}: {r.extra}[/dim]")
    if tta:
        console.print(tta_table.rich_table(rows))
    console.print(f"raw numbers: {args.out}")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The ``t5lab bench`` command line that makes this table (for the Markdown's heading)."""
    words = ["t5lab", "bench", *args.cases]
    for flag, value in (("--tasks", args.tasks), ("--variants", args.variants), ("--time-cap", args.time_cap),
                        ("--threads", args.threads), ("--shape", args.shape)):
        if value is not None:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(words)
