"""Tasks: registered record generators and file readers for the training harness.

Importing this package registers the built-in tasks (synthetic seq2seq, classification, text).
Add your own with ``@register_task("name")`` on a :class:`Task` subclass.
"""

from __future__ import annotations

from t5lab.tasks.base import (
    ClassificationTask,
    Labelled,
    Pair,
    Record,
    Task,
    build_splits,
    dedupe,
    get_task,
    list_tasks,
    register_task,
    task_class,
)
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
