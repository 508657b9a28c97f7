"""Planning and running a study: every point checked first, then one ``train()`` call per run.

Study directory::

    <out>/<study name>/
      study.yaml    the study file as read (quick mode applied)
      plan.json     points: labels, parameter counts, tokens, max_steps, each seed's run name
      timings.json  wall seconds per run directory (summed over attempts)
      runs/<study>-<labels>-seed=<n>/<timestamp>/   ordinary run directories (t5lab.train)
      report.md  results.csv  *.png                 t5lab.study.report

Each run goes through :func:`t5lab.train.run.train` as a one-value sweep over ``train.seed``, so
the harness's own rules resume a study: a run whose config already finished (DONE) is skipped,
an unfinished one with a checkpoint continues from it, and a run killed before its first
checkpoint starts again in a fresh directory.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from t5lab.errors import ConfigError
from t5lab.study.layout import PLAN, TIMINGS, read_timings
from t5lab.study.spec import Point, Study, expand, read_study


def builtin_path(name: str) -> Path:
    """A built-in study file (``src/t5lab/configs/studies/<name>.yaml``)."""
    folder = Path(str(resources.files("t5lab") / "configs" / "studies"))
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise ConfigError(f"--builtin {name}: no such built-in study; built-in studies: {known}")
    return path


@dataclass
class Plan:
    study: Study
    points: list[Point]

    @property
    def runs(self) -> int:
        return len(self.points) * self.study.seeds

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study.name,
            "seeds": self.study.seed_values(),
            "match": vars(self.study.match),
            "metric": self.study.metric,
            "threshold": self.study.threshold,
            "axes": [a.name for a in self.study.axes],
            "points": [
                {"key": p.key, "labels": p.labels, "group": p.group, "variant": p.variant, "info": p.info,
                 "runs": [c.name for c in p.configs], "configs": [c.to_dict() for c in p.configs]}
                for p in self.points
            ],
        }

    def describe(self) -> str:
        lines = [f"study {self.study.name}: {len(self.points)} points x {self.study.seeds} seeds = {self.runs} runs"]
        for p in self.points:
            i = p.info
            matched = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in (i.get("matched") or {}).items())
            extra = f" (matched {matched})" if matched else ""
            lines.append(
                f"  {p.key or p.raw['name']}: {i.get('params', 0):,} params{extra}, "
                f"{i.get('tokens_per_example', 0):.1f} tokens/example, max_steps={i.get('max_steps')}"
                + (f", {i['train_tokens']:,} training tokens" if i.get("train_tokens") else "")
            )
        return "\n".join(lines)


def plan(study_file: str | os.PathLike | dict[str, Any], overrides: list[str] | tuple[str, ...] = (), quick: bool = False) -> Plan:
    """Read, expand, match and validate a whole study; nothing is written.

    Raises:
        ConfigError: A bad study file or any bad point (one line), before any run.
    """
    from t5lab.study.matching import apply_matching
    from t5lab.train.run import check_runtime

    study = read_study(study_file, overrides, quick=quick)
    points = expand(study)
    apply_matching(points, study.match, study.seed_values())
    for p in points:
        for cfg in p.configs:
            check_runtime(cfg)
    return Plan(study, points)


def study_dir(out: str | os.PathLike, plan_: Plan) -> Path:
    return Path(out) / plan_.study.name


def run_study(
    study_file: str | os.PathLike | dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    out: str | os.PathLike = "studies",
    quick: bool = False,
    progress: bool = False,
    report: bool = True,
) -> Path:
    """Plan a study, then train every run that has not finished; write the report.

    Returns:
        The study directory.
    """
    from t5lab.fileio import atomic_write_text
    from t5lab.train.run import train

    p = plan(study_file, overrides, quick)
    print(p.describe())
    root = study_dir(out, p)
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "study.yaml", yaml.safe_dump(p.study.source, sort_keys=False))
    atomic_write_text(root / PLAN, json.dumps(p.to_dict(), indent=1) + "\n")
    timings = read_timings(root)
    done = 0
    for point in p.points:
        for seed, cfg in zip(p.study.seed_values(), point.configs):
            done += 1
            print(f"study run {done}/{p.runs}: {cfg.name}")
            raw = dict(point.raw)
            raw["train"] = {**raw.get("train", {}), "seed": [seed]}  # a one-value sweep: skip / resume rules
            start = time.perf_counter()
            [result] = train(raw, out=runs, progress=progress)
            if not result.skipped:
                key = str(result.run_dir.relative_to(root))
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
                atomic_write_text(root / TIMINGS, json.dumps(timings, indent=1) + "\n")
    if report:
        from t5lab.study.report import write_report

        write_report(root)
    return root
