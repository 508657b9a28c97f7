"""Loading user code: ``--import`` modules (they register tasks and model variants) and
``module:fn`` / ``file.py:fn`` references (rewards)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from t5lab.errors import T5LabError


def import_module_or_file(spec: str, what: str = "--import") -> ModuleType:
    """Import ``spec``: a path to a ``.py`` file (loaded once, under a stable name) or a dotted module.

    Args:
        spec: ``path/to/file.py`` or ``package.module``.
        what: how the caller names the setting, for the error message.

    Raises:
        T5LabError: a missing file or a module that cannot be imported.
    """
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise T5LabError(f"{what} {spec}: no such file; give a path to a .py file or a module name")
        name = f"t5lab_user_{path.stem}"
        if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
            return sys.modules[name]
        module_spec = importlib.util.spec_from_file_location(name, path.resolve())
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as err:
        raise T5LabError(f"{what} {spec}: cannot import it ({err})") from err


def import_user_modules(specs: list[str]) -> None:
    """Import each ``--import`` spec: a path to a ``.py`` file or a dotted module name."""
    for spec in specs:
        import_module_or_file(spec)
