"""Lazy public names for a package (PEP 562): resolve ``name -> module`` on first access."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, mapping: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable, Callable]:
    """Return ``(__getattr__, __dir__)`` for ``package`` whose public ``mapping`` is name -> module.

    A resolved value is cached in the package's ``namespace`` (its ``globals()``).
    """

    def __getattr__(name: str) -> Any:
        module = mapping.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(mapping))

    return __getattr__, __dir__
