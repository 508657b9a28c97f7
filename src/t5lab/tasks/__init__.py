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

__all__ = [
    "ClassificationTask",
    "Labelled",
    "Pair",
    "Record",
    "Task",
    "build_splits",
    "dedupe",
    "get_task",
    "list_tasks",
    "register_task",
    "task_class",
]
