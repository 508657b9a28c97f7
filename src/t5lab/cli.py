"""`t5lab` command line: thin wrappers that parse arguments, call the Python API and print.

Each area contributes its sub-commands through an ``add_commands(subparsers)`` function in its own
``cli`` module, so the areas stay independent. Sub-command modules must keep heavy imports (torch,
transformers, lightning) inside the command functions so that ``t5lab --help`` stays fast.
A :class:`t5lab.errors.T5LabError` raised anywhere becomes a one-line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# modules that define `add_commands(subparsers)`; missing ones are skipped while work is in progress
COMMAND_MODULES = (
    "t5lab.train.cli",
    "t5lab.explore.cli",
    "t5lab.explore.interp_cli",
    "t5lab.rl.cli",
    "t5lab.bench.cli",
    "t5lab.study.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="t5lab", description="Train, inspect and RL-tune T5 variants."
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE.py",
        help="import a user module first (to register tasks or model variants); repeatable",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
                continue  # the module or its package is not written yet
            raise
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from t5lab.errors import T5LabError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        from t5lab.plugins import import_user_modules

        import_user_modules(args.imports)
        result = args.func(args)
    except T5LabError as err:
        if os.environ.get("T5LAB_DEBUG", "") not in ("", "0"):
            import traceback

            traceback.print_exc()  # T5LAB_DEBUG=1: where the error was raised, then the one line
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
