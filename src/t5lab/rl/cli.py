"""``t5lab ppo | grpo | rloo | dpo | rl``: parse arguments, run, print the run directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from t5lab.errors import T5LabError

_HELP = {
    "ppo": "PPO-tune a T5 / pseudo-decoder / decoder-only generator against a reward",
    "grpo": "GRPO-tune a generator (t5, pseudo_dec, decoder_only, gpt2): G samples per prompt, no value head",
    "rloo": "RLOO-tune a generator: k samples per prompt, leave-one-out baseline, REINFORCE",
    "dpo": "DPO / IPO-tune a generator on preference pairs (a JSONL file, or built from a task)",
    "rl": "run any of ppo / grpo / rloo / dpo, named by the config's algo: key",
}


def add_commands(subparsers: Any) -> None:
    """Register the RL commands (heavy imports stay inside :func:`cmd_rl`)."""
    for algo, help_text in _HELP.items():
        p = subparsers.add_parser(
            algo,
            help=help_text,
            description=(
                f"{help_text}. Run from CONFIG.yaml with dotted.key=value overrides (e.g. steps=50 "
                f"{'ppo' if algo in ('ppo', 'rl') else algo}.learning_rate=1e-4). See docs/rl.md for the config keys."
            ),
        )
        p.add_argument("args", nargs="*", metavar="CONFIG.yaml [key=value ...]")
        p.add_argument("--out", default="runs", help="parent directory of run directories (default: runs/)")
        p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its checkpoints/last")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=cmd_rl, algo=None if algo == "rl" else algo)


def cmd_rl(args: argparse.Namespace) -> int:
    config, overrides = None, []
    for item in args.args:
        if "=" in item:
            overrides.append(item)
        elif config is None and not overrides:
            config = item
        else:
            raise T5LabError(f"unexpected argument {item!r}; give CONFIG.yaml first, then dotted.key=value overrides")
    command = args.algo or "rl"
    if args.resume:
        if config is not None or overrides:
            raise T5LabError("--resume RUN_DIR takes no config or overrides: the run's own config.yaml is used")
    else:
        if config is None:
            raise T5LabError(f"give a config: t5lab {command} CONFIG.yaml [key=value ...] (see docs/rl.md)")
        if not Path(config).is_file():
            raise T5LabError(f"config file {config} not found; give a path to a .yaml file")
    if args.algo == "ppo":  # PPO's own entry point (its configs carry no algo: key)
        from t5lab.rl.run import run_ppo

        run_dir = run_ppo(config, overrides, out=args.out, resume=args.resume, progress=not args.quiet)
    else:
        from t5lab.rl.launch import run_rl

        run_dir = run_rl(config, overrides, out=args.out, resume=args.resume, progress=not args.quiet, algo=args.algo)
    print(f"run directory: {run_dir}")
    return 0
