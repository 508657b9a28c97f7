"""``t5lab study``: plan, run and report an architecture comparison (heavy imports stay inside)."""

from __future__ import annotations

import argparse
from typing import Any

from t5lab.errors import T5LabError


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "study",
        help="compare variants over seeds with confidence intervals (a study file: base config + axes + seeds)",
        description=(
            "Run STUDY.yaml (a base config, axes, seeds, match: params/tokens) with key=value overrides "
            "(seeds=3, match=tokens, or dotted base-config keys); every point is checked first, finished "
            "runs are skipped, a killed one resumes. docs/study.md."
        ),
    )
    p.add_argument("args", nargs="*", metavar="[STUDY.yaml] [key=value ...]")
    p.add_argument("--builtin", metavar="NAME", help="run a built-in study (src/t5lab/configs/studies/NAME.yaml), e.g. arch")
    p.add_argument("--quick", action="store_true", help="the study file's quick mode (fewer seeds / steps)")
    p.add_argument("--out", default="studies", help="parent of study directories (default: studies/)")
    p.add_argument("--plan", action="store_true", help="print the points, parameter counts and steps; run nothing")
    p.add_argument("--report", metavar="STUDY_DIR", help="rebuild report.md, results.csv and PNGs from finished runs")
    p.add_argument("--progress", action="store_true", help="show Lightning's progress bars")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    if args.report:
        if args.args or args.builtin:
            raise T5LabError("--report STUDY_DIR takes no study file or overrides: it reads the study directory")
        from t5lab.study.report import write_report

        write_report(args.report)
        return 0
    study, overrides = None, []
    for item in args.args:
        if "=" in item:
            overrides.append(item)
        elif study is None and not overrides:
            study = item
        else:
            raise T5LabError(f"unexpected argument {item!r}; give STUDY.yaml first, then key=value overrides")
    from t5lab.study.runner import builtin_path, plan, run_study

    if args.builtin:
        if study is not None:
            raise T5LabError("give a study file or --builtin NAME, not both")
        study = builtin_path(args.builtin)
    if study is None:
        raise T5LabError("no study: give STUDY.yaml or --builtin arch (docs/study.md)")
    if args.plan:
        print(plan(study, overrides, quick=args.quick).describe())
        return 0
    root = run_study(study, overrides, out=args.out, quick=args.quick, progress=args.progress)
    print(f"study directory: {root}")
    return 0
