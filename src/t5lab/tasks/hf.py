"""Reading Hugging Face ``datasets`` splits, shared by the text (``hf:``) and labelled (``hf_labelled``) tasks."""

from __future__ import annotations

from typing import Any

from t5lab.errors import ConfigError


def load_hf_rows(dataset: str, split: str, limit: int | None) -> list[dict[str, Any]]:
    """Rows of ``datasets.load_dataset(NAME, CONFIG, split=split)`` with one-line errors."""
    try:
        import datasets  # optional dependency, imported only when an hf: task is used
    except ImportError:
        raise ConfigError(
            f"task hf:{dataset} needs the Hugging Face 'datasets' package: pip install datasets"
        ) from None
    name, _, config = dataset.partition("/")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # noqa: BLE001 - datasets raises many types (ConnectionError, FileNotFoundError, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"cannot load hf:{dataset} (split {split!r}): {first}; it needs network access to the hub "
            "(unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) or a local datasets cache"
        ) from None
    n = len(ds) if limit is None else min(limit, len(ds))
    return [ds[i] for i in range(n)]
