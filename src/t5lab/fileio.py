"""Atomic file writes: a crash (even ``kill -9``) never leaves a truncated file that loads.

Each writer writes a temporary file in the target's directory, flushes it to disk and renames it
over the target with ``os.replace`` (atomic on POSIX within one file system). Used by the harness
(configs, metrics, checkpoints), the explorer and PPO (PNGs) and the bench (JSON).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# one writer for the whole package (temp + fsync + rename, the umask's mode, one-line OSErrors)
from t5lab.rundir import atomic_write, atomic_write_text

__all__ = ["atomic_write", "atomic_write_text", "atomic_savefig"]


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """``fig.savefig`` to ``path`` atomically (format from the suffix, PNG by default)."""
    path = Path(path)
    fmt = kwargs.pop("format", path.suffix.lstrip(".").lower() or "png")
    atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, **kwargs), mode="wb")
    return path
