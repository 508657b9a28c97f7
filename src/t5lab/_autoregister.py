"""Register t5lab's models with the transformers Auto classes when transformers is imported.

The models (``t5lab.models``) need torch and transformers, seconds of start-up that ``t5lab
--help`` and config validation never use. So ``import t5lab`` only arranges for them: if
transformers is already imported it imports them now, else a one-shot import hook
(:pep:`451` meta path finder, https://docs.python.org/3/reference/import.html#the-meta-path)
imports them right after transformers' own module has run, so that
``import t5lab`` then ``AutoModelForSeq2SeqLM.from_pretrained(dir)`` works in either order.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

_TARGET = "transformers"


def _register() -> None:
    importlib.import_module("t5lab.models")  # its modules register their classes at import time


class _AfterTransformers(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader that imports ``transformers`` to register after it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _TARGET:
            return None
        _remove_hook()
        spec = importlib.util.find_spec(name)  # the real finders, this one removed
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        run = loader.exec_module

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                run(module)
                _register()

        spec.loader = _Loader()
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterTransformers)]


def register_when_transformers_loads() -> None:
    """Register the models now if transformers is imported, else as soon as it is."""
    if _TARGET in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterTransformers) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTransformers())
