"""Loading a run directory (or a bare model directory) for exploration.

A run directory is what ``t5lab train`` writes (docs/developing.md, "Run directories")::

    runs/<name>/<timestamp>/  config.yaml  metrics.csv  samples.txt  model/  checkpoints/  DONE

The explorer reads it without importing ``t5lab.train``.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from t5lab.errors import T5LabError
from t5lab.explore._common import load_model_dir
from t5lab.variants import Variant, variant_of


class MetricsTable:
    """The rows of ``metrics.csv``: one per logged step, empty cells as None."""

    def __init__(self, rows: list[dict[str, float | None]], columns: list[str]):
        self.rows = rows
        self.columns = columns

    @classmethod
    def read(cls, path: str | os.PathLike) -> MetricsTable:
        """Read a ``metrics.csv``; a missing file gives an empty table.

        Raises:
            T5LabError: A row has the wrong number of fields (a cut or edited line): named by its
                line number, never read as a shorter value.
        """
        path = Path(path)
        if not path.is_file():
            return cls([], [])
        with open(path, newline="") as f:
            reader = csv.reader(f)
            columns = next(reader, [])
            rows = []
            for fields in reader:
                if len(fields) != len(columns):
                    raise T5LabError(
                        f"{path} line {reader.line_num}: {len(fields)} fields where the header has {len(columns)} "
                        "(a cut or edited row); delete or repair that line"
                    )
                rows.append({k: _number(v) for k, v in zip(columns, fields)})
        return cls(rows, columns)

    def __len__(self) -> int:
        return len(self.rows)

    def check(self, name: str) -> None:
        """Raise T5LabError unless ``name`` is a column with at least one value."""
        if name not in self.columns or all(r.get(name) is None for r in self.rows):
            known = ", ".join(c for c in self.columns if any(r.get(c) is not None for r in self.rows)) or "none"
            raise T5LabError(f"unknown metric {name!r}; metrics.csv has: {known}")

    def series(self, name: str, x: str = "step") -> tuple[list[float], list[float]]:
        """``(xs, ys)`` of the rows where ``name`` has a value.

        A row without an ``x`` value (validation rows log no ``samples``/``tokens``) gets it by
        linear interpolation over ``step`` between the rows that have both; without an ``x``
        column at all the row index is used.
        """
        import numpy as np

        known = [(r["step"], r[x]) for r in self.rows if r.get("step") is not None and r.get(x) is not None]
        xs, ys = [], []
        for i, row in enumerate(self.rows):
            y = row.get(name)
            if y is None or (isinstance(y, float) and math.isnan(y)):
                continue
            xv = row.get(x) if x in self.columns else i
            if xv is None and known and row.get("step") is not None:
                steps, values = zip(*known)
                if len(known) == 1:
                    xv = values[0] * (row["step"] / steps[0]) if steps[0] else values[0]
                else:  # linear in step, extrapolated at the ends with the nearest slope
                    xv = float(np.interp(row["step"], steps, values, left=None, right=None))
                    lo, hi = (0, 1) if row["step"] < steps[0] else (-2, -1)
                    if row["step"] < steps[0] or row["step"] > steps[-1]:
                        slope = (values[hi] - values[lo]) / ((steps[hi] - steps[lo]) or 1)
                        xv = values[hi] + slope * (row["step"] - steps[hi])
            if xv is not None:
                xs.append(xv)
                ys.append(y)
        return xs, ys

    def last(self, name: str) -> float | None:
        """The last logged value of a column, or None."""
        _, ys = self.series(name)
        return ys[-1] if ys else None

    def __repr__(self) -> str:
        return f"MetricsTable({len(self.rows)} rows, columns={self.columns})"


def _number(v: str | None) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except ValueError:
        return None
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def resolve_run_dir(path: str | os.PathLike) -> Path:
    """The run directory for ``path``: itself, its ``model/`` parent, or the newest timestamped child."""
    p = Path(path)
    if not p.exists():
        raise T5LabError(f"{p}: no such run or model directory; check the path (runs/<name>/<timestamp>)")
    if (p / "config.yaml").is_file() or (p / "config.json").is_file():
        return p
    children = sorted(c for c in p.iterdir() if c.is_dir() and (c / "config.yaml").is_file())
    if children:
        finished = [c for c in children if (c / "DONE").exists()]
        return (finished or children)[-1]
    raise T5LabError(f"{p}: not a run directory (no config.yaml) nor a model directory (no config.json)")


@dataclass
class Run:
    """A loaded run (or a bare model directory).

    Attributes:
        path: the run directory (or the model directory).
        model: the model in eval mode (None when loaded with ``load_model=False``).
        tokenizer: its tokenizer.
        config: the resolved ``ExperimentConfig`` (None for a bare model directory).
        metrics: the ``metrics.csv`` table (empty for a bare model directory).
        model_dir: where the model was loaded from.
    """

    path: Path
    model: Any
    tokenizer: Any
    config: Any
    metrics: MetricsTable
    model_dir: Path
    raw_config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        if self.config is not None and (self.path / "config.yaml").is_file():
            return f"{getattr(self.config, 'name', self.path.parent.name)}/{self.path.name}"
        return self.path.name

    @property
    def variant(self) -> str:
        """The ``model.variant`` name of the run (of the model's type, for a bare model directory)."""
        if self.config is not None and getattr(self.config, "model", None) is not None:
            return str(self.config.model.variant)
        if self.raw_config.get("model", {}).get("variant"):
            return str(self.raw_config["model"]["variant"])
        try:
            return self.variant_obj.name
        except T5LabError:
            return "?"

    @property
    def variant_obj(self) -> Variant:
        """The run's :class:`~t5lab.variants.Variant` (from the loaded model, else from the directory)."""
        return variant_of(self.model if self.model is not None else self.model_dir)

    @cached_property
    def splits(self) -> dict[str, list]:
        """The task's ``train``/``val``/``test`` records, rebuilt deterministically from the config."""
        if self.config is None:
            raise T5LabError(f"{self.path} is a model directory without config.yaml; it has no data splits")
        from t5lab.tasks import build_splits

        return build_splits(self.config.data)

    def num_parameters(self) -> int | None:
        """Parameter count, from the loaded model or the safetensors headers (tied weights once)."""
        if self.model is not None:
            return sum(p.numel() for p in self.model.parameters())
        files = sorted(self.model_dir.glob("*.safetensors"))
        if not files:
            return None
        from safetensors import safe_open

        seen: set[str] = set()
        total = 0
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    if key not in seen:
                        seen.add(key)
                        total += math.prod(st.get_slice(key).get_shape())
        return total

    def ensure_model(self) -> Any:
        """The model, loading it from ``model_dir`` if the run was loaded with ``load_model=False``."""
        if self.model is None:
            self.model, self.tokenizer = load_model_dir(self.model_dir)
        return self.model

    def measure_throughput(self, steps: int = 5, batch_size: int | None = None) -> float | None:
        """Training tokens/s measured now: forward + backward on training batches of the run.

        Tokens are loss tokens (examples for a classifier), as the ``tokens`` column of
        ``metrics.csv`` counts them. The first batch warms up and is not timed; the result is the
        median of the per-batch rates (robust to a busy machine). No optimizer step is taken;
        gradients are cleared after.
        """
        import statistics
        import time

        if self.config is None:
            return None
        model = self.ensure_model()
        size = batch_size or self.config.train.batch_size
        batches = self.batches("train", size)[: steps + 1]
        model.train()
        rates = []
        try:
            for i, batch in enumerate(batches):
                start = time.perf_counter()
                model(**batch).loss.backward()
                elapsed = time.perf_counter() - start
                labels = batch["labels"]
                tokens = int((labels != -100).sum()) if labels.dtype == torch.long and labels.dim() == 2 else labels.shape[0]
                if i > 0 and elapsed > 0:
                    rates.append(tokens / elapsed)
        finally:
            model.zero_grad(set_to_none=True)
            model.eval()
        return statistics.median(rates) if rates else None

    def tokens_per_second(self, measure: bool = True) -> float | None:
        """Training throughput: a logged tokens/s column, else ``tokens`` / elapsed time when the run
        logged a time column, else (``measure=True``) :meth:`measure_throughput` on this machine."""
        for col in ("tokens_per_s", "tokens_per_sec", "train_tokens_per_s", "throughput"):
            if col in self.metrics.columns:
                _, ys = self.metrics.series(col)
                if ys:
                    return sum(ys) / len(ys)
        for col in ("time", "elapsed", "elapsed_s", "wall_time", "train_time"):
            if col in self.metrics.columns and "tokens" in self.metrics.columns:
                pairs = [(r["tokens"], r[col]) for r in self.metrics.rows if r.get("tokens") and r.get(col)]
                if pairs and pairs[-1][1] > 0:
                    return pairs[-1][0] / pairs[-1][1]
        return self.measure_throughput() if measure else None

    def batches(self, split: str = "val", batch_size: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Model batches of a split, built the way training built them (``t5lab.formulation``)."""
        if split not in ("train", "val", "test"):
            raise T5LabError(f"unknown split {split!r}; use train, val or test")
        records = self.splits[split]
        if not records:
            raise T5LabError(f"the {split} split of {self.name} is empty; pick another split")
        size = batch_size or (self.config.train.eval_batch_size or self.config.train.batch_size)
        from t5lab.explore.formulate import make_batches

        return make_batches(self, records, size)

    def evaluate(self, split: str = "val", batch_size: int | None = None, exact_match: bool = True) -> dict[str, float]:
        """Metrics of a split, computed as training computes them.

        LMs: ``loss`` (token-weighted over the split), ``ppl``, ``token_acc`` (teacher-forced argmax)
        and, with ``exact_match=True``, ``exact_match``: the share of records whose greedy decoding
        equals the reference up to its ``</s>``. Classifiers: ``loss`` and ``accuracy``.
        """
        from t5lab.explore.formulate import evaluate_batches, exact_match_rate, run_formulation

        form = run_formulation(self)
        result = evaluate_batches(self.model, self.batches(split, batch_size), form.kind, form.problem_type)
        if exact_match and form.kind != "classification":
            size = batch_size or (self.config.train.eval_batch_size or self.config.train.batch_size)
            result["exact_match"] = exact_match_rate(self, self.splits[split], size)
        return result

    def _final_step(self) -> int | None:
        """Training step of the saved model: DONE's ``step``, else the last logged step."""
        import json

        done = self.path / "DONE"
        if done.is_file():
            try:
                return int(json.loads(done.read_text()).get("step"))
            except (ValueError, TypeError):
                pass
        steps = [r["step"] for r in self.metrics.rows if r.get("step") is not None]
        return int(max(steps)) if steps else None

    def _last_val(self) -> tuple[int | None, float | None]:
        rows = [r for r in self.metrics.rows if r.get("val_loss") is not None]
        return (rows[-1].get("step"), rows[-1]["val_loss"]) if rows else (None, None)

    def _model_at_last_validation(self, val_step: int) -> tuple[Any, str]:
        """The saved model if it is the one validated last, else the weights of ``checkpoints/last.ckpt``.

        Lightning logs epoch-end validation at ``global_step - 1``; a run that trains past its last
        validation saves a model that was never validated, but its ``last.ckpt`` (written at that
        validation) holds the validated weights.
        """
        final = self._final_step()
        if final is None or final - 1 <= val_step <= final:
            return self.model, str(self.model_dir)
        ckpt = self.path / "checkpoints" / "last.ckpt"
        if ckpt.is_file():
            from t5lab import rundir

            state = rundir.load_checkpoint(ckpt)  # never unpickles code; manifest-checked; one-line errors
            if int(state.get("global_step", -1)) - 1 <= val_step <= int(state.get("global_step", -1)):
                import copy

                weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
                model = copy.deepcopy(self.model)
                missing, unexpected = model.load_state_dict(weights, strict=False)
                # tied copies (lm_head / embed_tokens) may be absent from a checkpoint; others may not
                missing = [k for k in missing if not k.endswith(("lm_head.weight", "embed_tokens.weight"))]
                if missing or unexpected:
                    raise T5LabError(f"{ckpt}: weights do not fit the saved model (missing {missing[:3]}, unexpected {unexpected[:3]})")
                return model.eval(), str(ckpt)
        raise T5LabError(
            f"{self.name}: the saved model is from step {final} but the last val_loss was logged at step {val_step}, "
            "and no checkpoint holds that model; validate at the end of training to make the run verifiable"
        )

    def _validation_autocast(self) -> Any:
        """The autocast the run's validation ran under: bf16 when its ``train.precision`` resolves to
        ``bf16-mixed`` here (``auto`` does on an AVX512/AMX CPU), else none."""
        from t5lab.train.fast import bf16_autocast, resolve_precision

        cfg = self.config
        return bf16_autocast(resolve_precision(cfg.train.precision, "cpu") if cfg is not None else "32")

    def verify_stable_load(self, rtol: float = 1e-4, atol: float = 1e-5) -> dict[str, Any]:
        """Check that the saved run reproduces its stored validation loss, deterministically.

        Recomputes the validation loss on the rebuilt val split (same formulation and loss sums as
        training) and compares it with the last logged ``val_loss`` of ``metrics.csv``. The model is
        the saved ``model/`` when it is the one validated last, else the weights of
        ``checkpoints/last.ckpt`` written at that validation. Also checks that two forward passes
        give bit-identical logits.

        Returns:
            ``{"stored": ..., "recomputed": ..., "step": ..., "source": ...}``.

        Raises:
            T5LabError: no stored val_loss, a mismatch, or non-deterministic outputs.
        """
        step, stored = self._last_val()
        if stored is None:
            raise T5LabError(f"{self.name}: metrics.csv has no val_loss to compare with; was validation run?")
        if self.model is None:
            raise T5LabError(f"{self.name}: loaded without a model (load_model=False); load it to verify")
        model, source = self._model_at_last_validation(int(step))
        from t5lab.explore.formulate import evaluate_batches, run_formulation

        form = run_formulation(self)
        batches = self.batches("val")
        with self._validation_autocast():
            recomputed = evaluate_batches(model, batches, form.kind, form.problem_type)["loss"]
        if not math.isclose(recomputed, stored, rel_tol=rtol, abs_tol=atol):
            raise T5LabError(
                f"{self.name}: recomputed val_loss {recomputed:.6f} != stored {stored:.6f} (step {step}, {source}); "
                "the saved model, tokenizer or data split does not match the run"
            )
        with torch.no_grad():
            first = model(**batches[0]).logits
            second = model(**batches[0]).logits
        if not torch.equal(first, second):
            raise T5LabError(f"{self.name}: two forward passes differ; the model is not deterministic in eval mode")
        return {"stored": stored, "recomputed": recomputed, "step": step, "source": source}


def load_run(
    run_dir: str | os.PathLike, load_model: bool = True, attn_implementation: str | None = None, verify: bool | None = None
) -> Run:
    """Load a run directory (or an HF model directory): model, tokenizer, config, metrics, splits.

    Args:
        run_dir: ``runs/<name>/<timestamp>`` (``runs/<name>`` picks its newest run), the run's
            ``model/`` directory, or any ``save_pretrained`` model directory.
        load_model: load the model and tokenizer (False: metrics and config only, for plots).
        attn_implementation: e.g. ``"eager"`` to load for attention maps.
        verify: check the weights against the run's ``manifest.json`` (sha256) before loading;
            None: on unless ``T5LAB_NO_VERIFY=1`` (the CLI's ``--no-verify``).

    Returns:
        A :class:`Run`; ``run.splits`` rebuilds the task's data splits on first access.

    Raises:
        T5LabError: the path is missing or is neither a run nor a model directory.
    """
    path = resolve_run_dir(run_dir)
    config = None
    raw: dict[str, Any] = {}
    if (path / "config.yaml").is_file():
        model_dir = path / "model"
        import yaml

        raw = yaml.safe_load((path / "config.yaml").read_text()) or {}
        try:
            from t5lab.config import load_config

            config = load_config(path / "config.yaml")
        except ImportError:  # pragma: no cover - the config module is part of the package
            config = None
    elif path.name == "model" and (path.parent / "config.yaml").is_file():
        return load_run(path.parent, load_model, attn_implementation, verify)
    else:
        model_dir = path
    metrics = MetricsTable.read(path / "metrics.csv")
    model = tokenizer = None
    if load_model:
        if not (model_dir / "config.json").is_file():
            raise T5LabError(f"{path}: the run has no saved model in {model_dir}; did training finish?")
        from t5lab import rundir

        rundir.verify_model_dir(model_dir, verify_hashes=rundir.verification_on(verify))  # one line, not a traceback
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a load report of missing / unexpected tensors: check_complete says it in one line
        try:
            model, tokenizer = load_model_dir(model_dir, attn_implementation)
        finally:
            hf_logging.set_verbosity(level)
        rundir.check_complete(model, model_dir)
        limit = getattr(getattr(config, "data", None), "max_length", None)
        if limit and not 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
            tokenizer.model_max_length = int(limit)  # the run's context: tokens per side, eos included
    return Run(path, model, tokenizer, config, metrics, model_dir, raw)


def is_classifier(run: Run) -> bool:
    return run.model is not None and not variant_of(run.model).generates
