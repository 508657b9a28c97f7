"""``t5lab ppo``: parse arguments, call :func:`t5lab.rl.run.run_ppo`, print the run directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from t5lab.errors import T5LabError


def add_commands(subparsers: Any) -> None:
    """Register ``ppo`` (heavy imports stay inside :func:`cmd_ppo`)."""
    p = subparsers.add_parser(
        "ppo",
        help="PPO-tune a T5 / pseudo-decoder / decoder-only generator against a reward",
        description=(
            "Run PPO from CONFIG.yaml with dotted.key=value overrides (e.g. ppo.learning_rate=1e-4 steps=50). "
            "See docs/rl.md for the config keys."
        ),
    )
    p.add_argument("args", nargs="*", metavar="CONFIG.yaml [key=value ...]")
    p.add_argument("--out", default="runs", help="parent directory of run directories (default: runs/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its checkpoints/last")
    p.add_argument("--quiet", action="store_true", help="do not print one line per PPO step")
    p.set_defaults(func=cmd_ppo)


def cmd_ppo(args: argparse.Namespace) -> int:
    config, overrides = None, []
    for item in args.args:
        if "=" in item:
            overrides.append(item)
        elif config is None and not overrides:
            config = item
        else:
            raise T5LabError(f"unexpected argument {item!r}; give CONFIG.yaml first, then dotted.key=value overrides")
    from t5lab.rl.run import run_ppo

    if args.resume:
        if config is not None or overrides:
            raise T5LabError("--resume RUN_DIR takes no config or overrides: the run's own config.yaml is used")
        run_dir = run_ppo(resume=args.resume, progress=not args.quiet)
    else:
        if config is None:
            raise T5LabError("give a PPO config: t5lab ppo CONFIG.yaml [key=value ...] (see docs/rl.md)")
        if not Path(config).is_file():
            raise T5LabError(f"config file {config} not found; give a path to a .yaml file")
        run_dir = run_ppo(config, overrides, out=args.out, progress=not args.quiet)
    print(f"run directory: {run_dir}")
    return 0
