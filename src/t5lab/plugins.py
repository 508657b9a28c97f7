"""Loading user modules given with ``--import`` (they register tasks and model variants)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from t5lab.errors import T5LabError


def import_user_modules(specs: list[str]) -> None:
    """Import each spec: a path to a ``.py`` file or a dotted module name."""
    for spec in specs:
        path = Path(spec)
        if spec.endswith(".py"):
            if not path.is_file():
                raise T5LabError(f"--import {spec}: no such file; give a path to a .py file or a module name")
            name = f"t5lab_user_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(spec)
            except ModuleNotFoundError as err:
                raise T5LabError(f"--import {spec}: {err}") from err
