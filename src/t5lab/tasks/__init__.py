"""Tasks: registered record generators and file readers for the training harness.

Importing this package registers the built-in tasks (synthetic seq2seq, classification, text):
``t5lab.tasks.registry`` imports their modules, and this package ``mixture`` (which uses the registry); ``t5lab.tasks.base`` (records, ``Task``,
``register_task``) imports none of them.
Add your own with ``@register_task("name")`` on a :class:`Task` subclass.
"""

from __future__ import annotations

from t5lab.tasks import mixture  # noqa: F401  (registers `mixture`, which builds its entries through the registry)
from t5lab.tasks.base import (
    ClassificationTask,
    Labelled,
    Pair,
    Record,
    Task,
    check_sizes,
    dedupe,
    register_task,
)
from t5lab.tasks.registry import build_splits, get_task, list_tasks, task_class
from t5lab.tasks.span_corruption import reconstruct, span_corrupt_text, span_corruption
from t5lab.tasks.text import OBJECTIVES, apply_objective, bundled_corpus_path, causal_lm, prefix_lm

__all__ = [
    "OBJECTIVES",
    "ClassificationTask",
    "Labelled",
    "Pair",
    "Record",
    "Task",
    "apply_objective",
    "build_splits",
    "bundled_corpus_path",
    "causal_lm",
    "check_sizes",
    "dedupe",
    "get_task",
    "list_tasks",
    "prefix_lm",
    "reconstruct",
    "register_task",
    "span_corrupt_text",
    "span_corruption",
    "task_class",
]
