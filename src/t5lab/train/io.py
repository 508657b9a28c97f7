"""Atomic file writes of a run directory (t5lab.rundir): a crash, even ``kill -9``, never leaves a
truncated file that loads, and every weights file is recorded in the run's sha256 manifest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from t5lab.rundir import atomic_append_text, atomic_write, atomic_write_text, save_dir

__all__ = ["atomic_write", "atomic_write_text", "atomic_append_text", "atomic_save_pretrained"]


def atomic_save_pretrained(
    model: Any, tokenizer: Any, path: str | os.PathLike, run_dir: str | os.PathLike | None = None
) -> Path:
    """``save_pretrained`` model (safetensors) and tokenizer into ``path`` atomically.

    Everything is written into a sibling temp directory which then replaces ``path``
    (:func:`t5lab.rundir.save_dir`), so ``path`` holds either the old or the new complete model,
    never a mix. With ``run_dir`` the weights' sha256 goes into its ``manifest.json``.
    """

    def write(tmp: Path) -> None:
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

    return save_dir(path, write, run_dir=run_dir, point="model" if model is not None else None)
