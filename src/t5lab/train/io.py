"""Atomic file writes: a crash (even ``kill -9``) never leaves a truncated file that loads.

Each writer writes a temporary file in the target's directory, flushes it to disk and renames it
over the target with ``os.replace`` (atomic on POSIX within one file system).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from t5lab.fileio import atomic_write, atomic_write_text

__all__ = ["atomic_write", "atomic_write_text", "atomic_save_pretrained"]


def atomic_save_pretrained(model: Any, tokenizer: Any, path: str | os.PathLike) -> Path:
    """``save_pretrained`` model (safetensors) and tokenizer into ``path`` atomically.

    Everything is written into a sibling temp directory which then replaces ``path`` (an old
    ``path`` is first renamed aside and deleted afterwards), so ``path`` holds either the old or
    the new complete model, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        if model is not None:
            from transformers.utils import logging as hf_logging

            # transformers draws a "Writing model shards" bar even for one small shard
            was_enabled = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                model.save_pretrained(str(tmp), safe_serialization=True)
            finally:
                if was_enabled:
                    hf_logging.enable_progress_bar()
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
