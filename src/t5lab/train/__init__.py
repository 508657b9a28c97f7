"""The training harness: ``t5lab train``.

``train(config, overrides)`` runs one config or a sweep and returns the run directories; the
Lightning pieces live in :mod:`t5lab.train.module` (LightningModule), :mod:`t5lab.train.data`
(LightningDataModule) and :mod:`t5lab.train.callbacks`. Imports are lazy so that ``import
t5lab.train`` (and ``t5lab --help``) do not load Lightning.
"""

from __future__ import annotations

from t5lab._lazy import lazy_exports

_LAZY = {
    "train": "t5lab.train.run",
    "run_experiment": "t5lab.train.run",
    "resume": "t5lab.train.run",
    "RunResult": "t5lab.train.run",
    "T5LabModule": "t5lab.train.module",
    "T5LabDataModule": "t5lab.train.data",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports("t5lab.train", _LAZY, globals())
