"""``t5lab train`` / ``t5lab sweep``: parse arguments, call :func:`t5lab.train.run.train`, print."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from t5lab.errors import T5LabError


def add_commands(subparsers: Any) -> None:
    """Register ``train`` and its alias ``sweep`` (heavy imports stay inside :func:`cmd_train`)."""
    for name in ("train", "sweep"):
        p = subparsers.add_parser(
            name,
            help="train a model from a YAML config (no config: the built-in quickstart); list values sweep",
            description=(
                "Train from CONFIG.yaml with dotted.key=value overrides (values are YAML, e.g. train.lr=3e-4, "
                "model.d_model=[32,64] sweeps). Without a config the built-in quickstart runs."
            ),
        )
        p.add_argument("args", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
        p.add_argument("--out", default="runs", help="parent directory of run directories (default: runs/)")
        p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its checkpoints/last.ckpt")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        p.add_argument("--no-verify", action="store_true",
                       help="do not check checkpoints and init_from weights against their run's manifest.json (sha256)")
        p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    config, overrides = None, []
    for item in args.args:
        if "=" not in item and config is None and not overrides:
            config = item
        elif "=" in item:
            overrides.append(item)
        else:
            raise T5LabError(f"unexpected argument {item!r}; give CONFIG.yaml first, then dotted.key=value overrides")
    if config is not None and not Path(config).is_file():
        raise T5LabError(f"config file {config} not found; give a path to a .yaml file (or none for the quickstart)")
    if args.no_verify:
        from t5lab.rundir import no_verify

        with no_verify():  # read where each checkpoint or model is checked (t5lab.rundir)
            return _train(args, config, overrides)
    return _train(args, config, overrides)


def _train(args: argparse.Namespace, config: str | None, overrides: list[str]) -> int:
    from t5lab.train import run

    if args.resume:
        if config is not None or overrides:
            raise T5LabError("--resume RUN_DIR takes no config or overrides: the run's own config.yaml is used")
        from t5lab.train.timing import process_start

        result = run.resume(args.resume, progress=not args.no_progress, since=process_start())
        print(f"run directory: {result.run_dir}")
        return 0
    from t5lab.train.timing import process_start

    run.train(config, overrides, out=args.out, progress=not args.no_progress, since=process_start())
    return 0
