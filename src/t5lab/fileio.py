"""Atomic file writes: a crash (even ``kill -9``) never leaves a truncated file that loads.

Each writer writes a temporary file in the target's directory, flushes it to disk and renames it
over the target with ``os.replace`` (atomic on POSIX within one file system). Used by the harness
(configs, metrics, checkpoints), the explorer and PPO (PNGs) and the bench (JSON).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "w") -> None:
    """Call ``write(fh)`` on a temp file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(text))


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``fig.savefig`` to ``path`` atomically (format from the suffix, PNG by default)."""
    path = Path(path)
    fmt = kwargs.pop("format", path.suffix.lstrip(".").lower() or "png")
    atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, **kwargs), mode="wb")
    return path
