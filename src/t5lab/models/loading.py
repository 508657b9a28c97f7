"""Loading t5lab variants from plain T5 checkpoints, with a report of what was used and what is new.

transformers' ``from_pretrained(..., output_loading_info=True)`` returns the missing and unexpected
keys; :class:`LoadReport` turns them into the three lists a researcher asks about when starting a
variant from a T5 checkpoint: which checkpoint tensors were used, which model tensors are new
(randomly initialised), and which checkpoint tensors were left unused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from torch import nn

logger = logging.getLogger("t5lab")


@dataclass
class LoadReport:
    """What a load from a checkpoint did. Names are the model's parameter/buffer names."""

    source: str
    used: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @classmethod
    def from_loading_info(cls, model: nn.Module, info: dict[str, Any], source: str) -> LoadReport:
        missing = set(info.get("missing_keys", []))
        mismatched = [k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys", [])]
        names = list(model.state_dict().keys())
        return cls(
            source=str(source),
            used=[n for n in names if n not in missing and n not in mismatched],
            new=sorted(missing | set(mismatched)),
            unused=sorted(info.get("unexpected_keys", [])),
            mismatched=sorted(mismatched),
        )

    def summary(self) -> str:
        lines = [
            f"loaded weights from {self.source}: "
            f"{len(self.used)} tensors used, {len(self.new)} new (randomly initialised), "
            f"{len(self.unused)} in the checkpoint unused"
        ]
        if self.new:
            lines.append("  new: " + ", ".join(_compress(self.new)))
        if self.unused:
            lines.append("  unused: " + ", ".join(_compress(self.unused)))
        if self.mismatched:
            lines.append("  shape mismatch (re-initialised): " + ", ".join(self.mismatched))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _compress(names: list[str], limit: int = 12) -> list[str]:
    """Collapse per-block names (``block.3.layer.0...``) into ``block.*.layer.0...`` for a readable line.

    Only the block index is folded: T5's sub-layer index (``layer.0`` self-attention, ``layer.1``
    cross-attention or FFN) says which part of the block a tensor belongs to.
    """
    import re

    collapsed: list[str] = []
    for name in names:
        pattern = re.sub(r"(^|\.)(block|layers|h)\.\d+\.", r"\1\2.*.", name)
        if pattern not in collapsed:
            collapsed.append(pattern)
    if len(collapsed) > limit:
        collapsed = collapsed[:limit] + [f"... ({len(collapsed) - limit} more)"]
    return collapsed


def from_pretrained_with_report(model_cls: type, path: str, **kwargs: Any):
    """``model_cls.from_pretrained(path)`` that also returns (and logs) a :class:`LoadReport`.

    The report is attached to the model as ``model.load_report``.
    """
    model, info = model_cls.from_pretrained(path, output_loading_info=True, **kwargs)
    report = LoadReport.from_loading_info(model, info, source=path)
    model.load_report = report
    logger.info(report.summary())
    return model, report
