"""Runs the ```python examples of README.md and docs/*.md, so that documentation cannot rot.

The blocks of one file run in order in one namespace, in a temporary working directory. A block
preceded by ``<!-- no-test -->`` is skipped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(<!--\s*no-test\s*-->\s*\n)?```python\n(.*?)```", re.DOTALL)


def python_blocks(path: Path) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(path.read_text()) if not m.group(1)]


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in DOC_FILES if p.exists()], ids=lambda p: p.name)
def test_doc_examples_run(path, tmp_path, monkeypatch):
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip(f"{path.name} has no python examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"doc_{path.stem}"}
    for i, block in enumerate(blocks):
        code = compile(block, f"{path.name}[block {i}]", "exec")
        exec(code, namespace)  # noqa: S102 - our own documentation


def test_fence_parser_skips_marked_blocks(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("```python\na = 1\n```\n<!-- no-test -->\n```python\nraise SystemExit\n```\n")
    assert python_blocks(doc) == ["a = 1\n"]
    assert os.path.exists(doc)
