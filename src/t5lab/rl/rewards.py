"""Pluggable rewards: one score per (prompt, response), from a callable named by an import path.

A reward is any callable ``fn(prompts: list[str], responses: list[str]) -> list[float] | Tensor``.
If it also accepts ``targets`` (a keyword argument, or ``**kwargs``), it receives the reference
answers of the prompts (when the prompt source has them), as the exact-match rewards need.

:func:`load_reward` resolves a spec:

- a built-in name: ``"exact_match"`` (1.0 when the response equals the target),
  ``"accuracy"`` (fraction of the target's characters reproduced at the same position) or
  ``"classifier"`` (probability that a sequence classifier, e.g. an EncT5 run, gives a label);
- ``"my_module:fn"`` (an importable module) or ``"path/to/file.py:fn"``.

With ``options``, the named object is a factory: ``obj(**options)`` must return the reward callable
(a class such as :class:`ClassifierReward` works that way).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from t5lab.errors import T5LabError
from t5lab.plugins import import_module_or_file

RewardFn = Callable[..., Sequence[float] | torch.Tensor]


def exact_match(prompts: list[str], responses: list[str], targets: list[str]) -> list[float]:
    """1.0 where the response equals the target (surrounding whitespace ignored), else 0.0."""
    return [float(r.strip() == t.strip()) for r, t in zip(responses, targets)]


def accuracy(prompts: list[str], responses: list[str], targets: list[str]) -> list[float]:
    """Fraction of target characters reproduced at the same position; extra characters count as errors.

    ``score = matches / max(len(target), len(response))`` (1.0 only for an exact match).
    """
    scores = []
    for r, t in zip(responses, targets):
        r, t = r.strip(), t.strip()
        longest = max(len(r), len(t))
        scores.append(1.0 if longest == 0 else sum(a == b for a, b in zip(r, t)) / longest)
    return scores


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """A model directory from a model dir, a run dir (``<run>/model``) or a run name dir (newest run).

    Raises:
        T5LabError: When no model can be found there.
    """
    p = Path(path)
    if (p / "config.json").is_file():
        return p
    if (p / "model" / "config.json").is_file():
        return p / "model"
    if p.is_dir():
        runs = sorted(
            (d for d in p.iterdir() if (d / "model" / "config.json").is_file() and (d / "DONE").exists()),
            key=lambda d: d.name,
        )
        if runs:
            return runs[-1] / "model"
    raise T5LabError(
        f"no model found at {p}: give a model directory (with config.json), a run directory (with model/) "
        "or a runs/<name> directory holding finished runs"
    )


class ClassifierReward:
    """Probability that a sequence classifier assigns ``label`` to each response.

    Works with any ``AutoModelForSequenceClassification`` directory that holds its tokenizer, e.g.
    the ``model/`` of an EncT5 run of ``t5lab train`` (the run directory itself is accepted too).

    Args:
        model: Model directory, run directory, or ``runs/<name>`` (its newest finished run).
        label: Class id (int) or class name (str, looked up in ``config.label2id``).
        with_prompt: Classify ``prompt + sep + response`` instead of the response alone.
        sep: Separator used with ``with_prompt``.
        logit: Return the label's log-probability instead of its probability.
        batch_size: Responses per classifier forward pass.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        label: int | str = 1,
        with_prompt: bool = False,
        sep: str = " ",
        logit: bool = False,
        batch_size: int = 64,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        import t5lab  # noqa: F401  (registers EncT5 with the Auto classes)

        directory = resolve_model_dir(model)
        self.model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
        self.model.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        cfg = self.model.config
        if getattr(cfg, "problem_type", None) in ("regression", "multi_label_classification"):
            raise T5LabError(
                f"classifier at {directory} is {cfg.problem_type}; the classifier reward needs single-label classification"
            )
        if isinstance(label, str):
            label2id = dict(getattr(cfg, "label2id", {}) or {})
            if label not in label2id:
                raise T5LabError(f"label {label!r} is not a class of {directory}; its classes are {sorted(label2id)}")
            label = int(label2id[label])
        if not 0 <= label < cfg.num_labels:
            raise T5LabError(f"label {label} out of range: the classifier at {directory} has {cfg.num_labels} classes")
        self.label = int(label)
        self.with_prompt, self.sep, self.logit, self.batch_size = with_prompt, sep, logit, batch_size

    @torch.no_grad()
    def __call__(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        texts = [p + self.sep + r if self.with_prompt else r for p, r in zip(prompts, responses)]
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[start : start + self.batch_size], return_tensors="pt", padding=True)
            logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)[:, self.label]  # (b,)
            out.append(logprobs if self.logit else logprobs.exp())
        return torch.cat(out)


BUILTINS: dict[str, Any] = {"exact_match": exact_match, "accuracy": accuracy, "classifier": ClassifierReward}


def _import_object(spec: str) -> Any:
    module_part, _, name = spec.rpartition(":")
    if not module_part or not name:
        raise T5LabError(
            f"reward {spec!r}: give a built-in ({', '.join(BUILTINS)}), 'my_module:fn' or 'path/to/file.py:fn'"
        )
    module = import_module_or_file(module_part, what=f"reward {spec!r}:")
    if not hasattr(module, name):
        raise T5LabError(f"reward {spec!r}: {module_part} has no attribute {name!r}")
    return getattr(module, name)


def load_reward(spec: str | Callable, options: dict[str, Any] | None = None) -> RewardFn:
    """The reward callable named by ``spec`` (see the module docstring).

    Args:
        spec: Built-in name, ``"module:fn"``, ``"file.py:fn"``, or a callable.
        options: Keyword arguments for a factory (a class or function returning the reward).

    Raises:
        T5LabError: Unknown name, import failure, or an object that is not callable.
    """
    obj = spec if callable(spec) else BUILTINS.get(spec) if spec in BUILTINS else _import_object(spec)
    if options or inspect.isclass(obj):
        try:
            obj = obj(**(options or {}))
        except TypeError as err:
            raise T5LabError(f"reward {spec!r}: bad options {options}: {err}") from err
    if not callable(obj):
        raise T5LabError(f"reward {spec!r} is not callable; it must be fn(prompts, responses) -> scores")
    return obj


def wants_targets(fn: Callable) -> bool:
    """Whether ``fn`` takes a ``targets`` argument (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "targets" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def compute_scores(
    fn: RewardFn, prompts: list[str], responses: list[str], targets: list[str] | None = None
) -> torch.Tensor:
    """Calls a reward and checks its output: ``(B,)`` finite float32 scores.

    Raises:
        T5LabError: A reward that needs targets without any, or one that returns the wrong number of
            scores or a non-finite one.
    """
    kwargs = {}
    if wants_targets(fn):
        if targets is None:
            raise T5LabError("this reward needs targets; use prompts from a seq2seq task or a .tsv with prompt<TAB>target")
        kwargs["targets"] = targets
    scores = torch.as_tensor(fn(prompts, responses, **kwargs), dtype=torch.float32).reshape(-1)
    if scores.shape[0] != len(responses):
        raise T5LabError(f"the reward returned {scores.shape[0]} scores for {len(responses)} responses; return one per response")
    if not torch.isfinite(scores).all():
        raise T5LabError("the reward returned a non-finite score (nan or inf); return finite floats")
    return scores
