"""LightningModule for every formulation: token-weighted losses, greedy exact match, samples.

Validation (and test) metrics are sums over the whole split divided at the end: ``val_loss`` is
the token-weighted mean cross-entropy over every target token of the split and ``val_ppl`` its
exp (not a mean of batch means); ``val_token_acc`` is teacher-forced argmax accuracy and
``val_exact_match`` compares greedy decodings with the references token by token and
``val_decoded_token_acc`` is the share of reference tokens that the greedy decoding has at the same
position (where a model copies earlier target tokens, teacher forcing hides how many it gets right
by itself).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from t5lab.config import ExperimentConfig
from t5lab.errors import T5LabError
from t5lab.formulation import (
    IGNORE,
    classification_loss,
    decoded_text,
    decoding_matches,
    lm_logits_labels,
    token_loss,
)
from t5lab.train.timing import phase


class NonFiniteLossError(T5LabError):
    """The training loss became NaN or infinite."""


KEEP_KEY = "_t5lab_logits_to_keep"  # training-batch entry set by on_before_batch_transfer (an int)


def logits_to_keep(labels: torch.Tensor) -> int:
    """How many final positions of a decoder-only batch need logits for the loss (0: all of them).

    ``logits[:, t]`` predicts ``labels[:, t + 1]`` (labels are not shifted, HF convention), so the
    first position needed is one before the first labelled column of the batch; a prefix LM's
    prefix (``-100`` labels) needs none. Returned in transformers' ``logits_to_keep`` sense (int n:
    the last n positions).

    Args:
        labels: ``(B, T)`` labels, ``-100`` where no loss is taken.

    Returns:
        ``T - first``, where ``first`` is the earliest position whose logits predict a label; 0 (keep
        everything) when that is position 0 or nothing is labelled.
    """
    labelled = (labels[:, 1:] != IGNORE).any(dim=0)  # (T-1,): column t+1 has a label somewhere
    if not bool(labelled.any()):
        return 0
    first = int(labelled.nonzero()[0])  # logits[:, first] predict the first labelled column
    return 0 if first == 0 else labels.shape[1] - first


class T5LabModule(pl.LightningModule):
    """Wraps a transformers model for training with Lightning.

    Args:
        model: A transformers ``PreTrainedModel`` built by :mod:`t5lab.models.registry`.
        cfg: The experiment config (optimiser, schedule, sampling settings).
        kind: The formulation kind (seq2seq | prefix_lm | causal_lm | classification).
        problem_type: Classification problem type.
        tokenizer: Used to print samples.
        run_dir: Where ``samples.txt`` goes (None: not written).
    """

    def __init__(
        self,
        model: Any,
        cfg: ExperimentConfig,
        kind: str,
        problem_type: str | None = None,
        tokenizer: Any = None,
        run_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.kind = kind
        self.problem_type = problem_type
        self.tokenizer = tokenizer
        self.run_dir = run_dir
        self.samples_seen = 0  # training examples consumed, all ranks (kept as a tensor: see training_step)
        self.tokens_seen = 0  # training loss tokens consumed, all ranks
        self._bad_t = torch.zeros(())  # non-finite losses not yet read on the host (CUDA only)
        self._keeps_logits: bool | None = None  # whether the model takes logits_to_keep (found on first use)
        self._acc: dict[str, torch.Tensor] = {}
        self._samples: list[tuple[str, str, str]] = []

    # -- forward / loss --------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        if "segment_ids" in batch:  # a packed training batch: per-segment masks (t5lab.train.packing)
            from t5lab.train.packing import packed_forward

            return packed_forward(self.model, batch)
        return self.model(**batch)

    def _loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(summed loss, number of loss tokens or examples, number correct) for one evaluation batch."""
        logits = self(batch).logits
        if self.kind == "classification":
            return classification_loss(logits, batch["labels"], self.problem_type)
        return token_loss(self.kind, logits, batch["labels"])

    def _train_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token-weighted mean loss, number of loss tokens or examples) of one training batch.

        The loss is computed once, with no accuracy (training does not use it):

        - seq2seq and packed batches: the model needs ``labels`` to build its decoder input (shifted
          per segment when packed), so it computes the loss; the module takes ``output.loss``, the
          token-weighted mean over the batch (the same value as ``token_loss``, tests/train/test_module.py).
        - prefix / causal LM: the labels stay out of the model; its LM head runs only from the first
          position that predicts a labelled token (``logits_to_keep``, :func:`logits_to_keep`: a
          prefix LM takes no loss on its prefix) and the loss is cross-entropy on those logits.
        - classification: logits without labels, then :func:`t5lab.formulation.classification_loss`.
        """
        batch = dict(batch)
        keep = batch.pop(KEEP_KEY, None)
        if self.kind == "seq2seq" or "segment_ids" in batch:
            labels = batch["labels"]
            out = self(batch)
            shift = 0 if self.kind == "seq2seq" else 1  # a decoder's logits[:, t] predict labels[:, t + 1]
            return out.loss, (labels[:, shift:] != IGNORE).sum()
        labels = batch.pop("labels")
        if self.kind == "classification":
            loss_sum, n, _ = classification_loss(self(batch).logits, labels, self.problem_type)
            return loss_sum / n.clamp(min=1), n
        if keep is None:
            keep = self._logits_to_keep(labels)
        if keep:
            batch["logits_to_keep"] = keep
        logits = self(batch).logits  # (B, T', V), T' = keep or T: the last T' positions
        labels = labels[:, labels.shape[1] - logits.shape[1] :]  # (B, T'): the positions of those logits
        logits, labels = lm_logits_labels(self.kind, logits, labels)  # logits[:, t] predicts labels[:, t + 1]
        loss_sum = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )
        n = (labels != IGNORE).sum()
        return loss_sum / n.clamp(min=1), n

    def _logits_to_keep(self, labels: torch.Tensor) -> int:
        """``logits_to_keep`` for a prefix / causal LM batch, or 0 (all) where the model has no such argument."""
        if self._keeps_logits is None:
            params = inspect.signature(self.model.forward).parameters
            self._keeps_logits = self.kind in ("prefix_lm", "causal_lm") and "logits_to_keep" in params
        return logits_to_keep(labels) if self._keeps_logits else 0

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Decide logits_to_keep while the labels are still on the host: on a GPU, reading it from the
        # device copy inside training_step would be a host sync every step.
        if (
            self._in_training_loop()
            and self.kind in ("prefix_lm", "causal_lm")
            and isinstance(batch, dict)
            and "labels" in batch
            and "segment_ids" not in batch
        ):
            batch = {**batch, KEEP_KEY: self._logits_to_keep(batch["labels"])}
        return batch

    def on_train_epoch_start(self) -> None:
        # Lightning calls set_epoch on `dataloader.sampler` and `batch_sampler.sampler` only; a batch
        # sampler of its own (length bucketing) must hear the epoch too, or every epoch repeats the order.
        loader = self.trainer.train_dataloader
        batch_sampler = getattr(loader, "batch_sampler", None)
        if callable(getattr(batch_sampler, "set_epoch", None)):
            batch_sampler.set_epoch(self.current_epoch)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Seed dropout from (seed, epoch, batch, rank): the random stream of a step never depends on
        # what ran before it (validation, a restart), so a resumed run is bit-identical.
        rank = self.global_rank  # 0 without a trainer
        seed = hash((self.cfg.train.seed, self.current_epoch, batch_idx, rank)) % (2**63)
        # only the generators this step draws from: torch.manual_seed also seeds every CUDA / MPS / XPU
        # device there is (~0.2 ms per call on a CPU-only machine, measured: ~0.5% of a tiny step)
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)  # the current device's generator (dropout on the GPU)
        elif self.device.type == "mps":
            torch.mps.manual_seed(seed)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n = self._train_loss(batch)
        rows = int(batch["input_ids"].shape[0])
        samples = batch["segment_ids"].amax(dim=1).sum() if "segment_ids" in batch else rows  # packed: segments
        bad = (~torch.isfinite(loss.detach())).float()
        if self.trainer.world_size > 1:
            # one collective for the three: every rank must stop together, and the counters are global
            both = torch.stack([bad, torch.as_tensor(samples, device=loss.device).float(), n.float()])
            bad, samples, n = self.trainer.strategy.reduce(both, reduce_op="sum").unbind()
        self._samples_t = self._samples_t + samples  # tensors: no host sync to count
        self._tokens_t = self._tokens_t + n
        if self._check_now():
            self._raise_if_non_finite(bad, loss)
        else:  # CUDA: remember it, read at the next logging step or checkpoint (see _check_now)
            self._bad_t = self._bad_t + bad
        if self._logging_step(batch_idx):
            # only every log_every_n_steps steps: the counters need a host read, and a self.log call
            # costs ~0.1-1 ms of Python per value on CPU
            self._raise_if_non_finite(self._bad_t)
            self._log_train_row(loss.detach(), rows)
        return loss

    def _logging_step(self, batch_idx: int) -> bool:
        """Whether this training batch writes a metrics row: it completes an optimizer step (the last
        micro-batch of an accumulation window) whose number is a multiple of ``log_every_n_steps``
        (0: never), or the trainer is stopping.

        Counted from ``trainer.global_step`` (optimizer steps, restored exactly by a resume), the
        count Lightning's own logging cadence follows in an uninterrupted run.
        """
        trainer = self.trainer
        every = trainer.log_every_n_steps
        done = batch_idx + 1
        steps = done % trainer.accumulate_grad_batches == 0 or done == trainer.num_training_batches
        return every > 0 and steps and ((self.global_step + 1) % every == 0 or trainer.should_stop)

    def _log_train_row(self, loss: torch.Tensor, rows: int) -> None:
        """Write one training row to every logger, at the step of the optimizer step this batch completes.

        The row goes to the loggers directly (``Logger.log_metrics``, public API) rather than through
        ``self.log``, whose step rows Lightning writes on a cadence of its own internal counter: after
        a resume from an epoch-end checkpoint that counter restarts one ahead of ``global_step`` and
        would drop every row (tests/train/test_resume.py). ``train_loss`` also goes through
        ``self.log`` for the progress bar and callbacks (early stopping may monitor it), not to loggers.
        """
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=rows)
        row = {
            "train_loss": float(loss),
            "samples": self.samples_seen,
            "tokens": self.tokens_seen,
            "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"]),
        }
        for logger in self.loggers:
            logger.log_metrics(row, step=self.global_step + 1)
            logger.save()

    def _in_training_loop(self) -> bool:
        """Whether a trainer is attached and running its training loop (``self.trainer`` raises when
        the module is used on its own)."""
        try:
            return bool(self.trainer.training)
        except RuntimeError:
            return False

    def _check_now(self) -> bool:
        """Whether to read the non-finite flag on the host at every step.

        On CPU (and MPS) a host read costs nothing: there is no queue of device work to drain. On
        CUDA it would stall the queue every step, so there the flag is read at logging steps and
        before every checkpoint (``on_train_epoch_end``): a non-finite loss stops the run within
        ``log_every_n_steps`` steps and never reaches a checkpoint.
        """
        return self.device.type != "cuda"

    def _raise_if_non_finite(self, bad: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        """Raise NonFiniteLossError when ``bad`` (a count of non-finite losses) is positive."""
        if bad.item() > 0:
            run = self.run_dir or "the run directory"
            when = (
                "stopped before updating the weights"
                if self._check_now()
                else f"detected within {self.trainer.log_every_n_steps} steps on CUDA, where the loss is checked every "
                "log_every_n_steps steps (the current weights may be non-finite)"
            )
            value = f" ({loss.item()})" if loss is not None else ""
            raise NonFiniteLossError(
                f"non-finite training loss{value} at step {self.global_step} (epoch {self.current_epoch}); "
                f"{when}. Lower train.lr or set train.gradient_clip_val; the last good "
                f"checkpoint is {run}/checkpoints/last.ckpt (continue with: t5lab train --resume {run})"
            )

    def on_train_epoch_end(self) -> None:
        # runs before ModelCheckpoint's epoch-end save: a non-finite loss never reaches a checkpoint
        self._raise_if_non_finite(self._bad_t)

    @property
    def samples_seen(self) -> int:
        """Training examples consumed so far, all ranks (a host read of the running count)."""
        return int(self._samples_t)

    @samples_seen.setter
    def samples_seen(self, value: int) -> None:
        self._samples_t = torch.tensor(int(value), dtype=torch.long)

    @property
    def tokens_seen(self) -> int:
        """Training loss tokens (or classification examples) consumed so far, all ranks."""
        return int(self._tokens_t)

    @tokens_seen.setter
    def tokens_seen(self, value: int) -> None:
        self._tokens_t = torch.tensor(int(value), dtype=torch.long)

    # -- evaluation ------------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, Any], prefix: str) -> None:
        valid = batch["index"] >= 0  # (B,)
        inputs = {k: v[valid] for k, v in batch["batch"].items()}
        if not bool(valid.any()):
            return
        loss_sum, n, correct = self._loss_terms(inputs)
        terms = {"loss_sum": loss_sum.detach().float(), "n": n.float(), "correct": correct.float()}
        if self.kind != "classification":
            # train.val_examples: only the split's first N examples are decoded (the loss and token
            # accuracy above still cover all of them); the test split is always decoded whole
            limit = self.cfg.train.val_examples if prefix == "val" else None
            decode = valid if limit is None else valid & (batch["index"] < limit)
            if bool(decode.any()):
                target = batch["target"][decode]  # (B', L) reference tokens, eos included, -100 padded
                prompts = {k: v[decode] for k, v in batch["prompts"].items()}
                with phase("decoding"):
                    pred = self._generate(prompts, target.shape[1])  # (B', <=L)
                exact, hits, ref_tokens = decoding_matches(
                    pred.tolist(), target.tolist(), self.tokenizer.eos_token_id, echo_input=self.cfg.data.echo_input
                )
                for key, value in (("exact", exact), ("decoded_hits", hits), ("decoded_tokens", ref_tokens)):
                    terms[key] = torch.tensor(float(value), device=target.device)
                terms["count"] = torch.tensor(float(target.shape[0]), device=target.device)
                self._keep_samples(batch["index"][decode], pred, prefix)
        else:
            terms["count"] = n.float()
            if len(self._samples) < self.cfg.train.num_samples:
                preds = self(inputs).logits
                self._keep_class_samples(batch["index"][valid], preds, prefix)
        for k, v in terms.items():
            key = f"{prefix}_{k}"
            self._acc[key] = self._acc.get(key, torch.zeros((), device=v.device)) + v

    @torch.no_grad()
    def _generate(self, prompts: dict[str, torch.Tensor], max_new: int) -> torch.Tensor:
        """Greedy continuation tokens (B, <= max_new), prompt and decoder start stripped.

        The whole evaluation batch (``train.eval_batch_size``) decodes at once with the KV cache
        (``use_cache=True``), and generation ends as soon as every row has produced its eos
        (``eos_token_id``; finished rows are padded): tests/train/test_time_to_accuracy.py checks both.
        """
        limit = self.cfg.train.max_new_tokens or max_new
        tok = self.tokenizer
        out = self.model.generate(
            **prompts,
            max_new_tokens=limit,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        from t5lab.variants import variant_of

        # the decoder start token (encoder-decoder) or the left-padded prompt (decoder) comes first
        return variant_of(self.model).new_tokens(out, prompts["input_ids"].shape[1])

    def _datamodule_examples(self, prefix: str) -> list[Any]:
        dm = getattr(self.trainer, "datamodule", None)
        return dm.examples.get(prefix, []) if dm is not None else []

    def _keep_samples(self, index: torch.Tensor, pred: torch.Tensor, prefix: str) -> None:
        want = self.cfg.train.num_samples - len(self._samples)
        if want <= 0 or self.trainer.global_rank != 0:
            return
        examples = self._datamodule_examples(prefix)
        decode = self._decode
        for i, p in list(zip(index.tolist(), pred.tolist()))[:want]:
            e = examples[i]
            self._samples.append((e.source, e.reference, decode(p)))

    def _keep_class_samples(self, index: torch.Tensor, logits: torch.Tensor, prefix: str) -> None:
        if self.trainer.global_rank != 0:
            return
        examples = self._datamodule_examples(prefix)
        want = self.cfg.train.num_samples - len(self._samples)
        for i, row in list(zip(index.tolist(), logits))[:want]:
            if self.problem_type == "regression":
                pred = f"{row.squeeze(-1).item():.4g}"
            elif self.problem_type == "multi_label_classification":
                pred = str((row > 0).nonzero().flatten().tolist())
            else:
                pred = str(int(row.argmax()))
            self._samples.append((examples[i].source, examples[i].reference, pred))

    def _decode(self, ids: list[int]) -> str:
        return decoded_text(self.tokenizer, ids, self.cfg.data.reverse_target, echo_input=self.cfg.data.echo_input)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._acc, self._samples = {}, []

    on_test_epoch_start = on_validation_epoch_start

    def _finish_eval(self, prefix: str) -> None:
        names = ("loss_sum", "n", "correct", "exact", "count", "decoded_hits", "decoded_tokens")
        device = self.device
        sums = torch.stack([self._acc.get(f"{prefix}_{k}", torch.zeros((), device=device)).to(device) for k in names])
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        loss_sum, n, correct, exact, count, decoded_hits, decoded_tokens = sums.tolist()
        if n == 0:
            return
        metrics = {f"{prefix}_loss": loss_sum / n}
        if self.kind == "classification":
            if self.problem_type != "regression":
                metrics[f"{prefix}_accuracy"] = correct / n
        else:
            # capped where float32 ends (e^88.7): Lightning stores logged values as float32, and the
            # printed value must be the stored one, not inf
            metrics[f"{prefix}_ppl"] = math.exp(min(loss_sum / n, 88.0))
            metrics[f"{prefix}_token_acc"] = correct / n
            metrics[f"{prefix}_exact_match"] = exact / max(count, 1.0)
            metrics[f"{prefix}_decoded_token_acc"] = decoded_hits / max(decoded_tokens, 1.0)
        self.log("step", float(self.global_step), on_step=False, on_epoch=True)
        for k, v in metrics.items():
            # already reduced over ranks above: no sync_dist
            self.log(k, v, on_step=False, on_epoch=True, prog_bar=k.endswith(("loss", "exact_match", "accuracy")))
        if self.trainer.global_rank == 0 and not self.trainer.sanity_checking:
            self._report(prefix, metrics)

    def _report(self, prefix: str, metrics: dict[str, float]) -> None:
        head = f"[{prefix} step {self.global_step} epoch {self.current_epoch}] " + "  ".join(
            f"{k}={v:.4g}" for k, v in metrics.items()
        )
        lines = [head]
        for src, ref, pred in self._samples:
            mark = "ok" if ref == pred else "xx"
            lines.append(f"  input: {src!r}  target: {ref!r}  prediction: {pred!r}  [{mark}]")
        text = "\n".join(lines)
        self.print(text)
        if self.run_dir is not None:
            from t5lab.train.io import atomic_append_text

            with phase("logging"):
                atomic_append_text(Path(self.run_dir) / "samples.txt", text + "\n", point="samples")

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    # -- optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        t = self.cfg.train
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                # biases and norm gains (1-D) are not decayed, as in nanoGPT / HF examples
                (decay if p.ndim >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if t.optimizer == "adafactor":
            from transformers.optimization import Adafactor

            # fixed learning rate as in T5 fine-tuning (Raffel et al. 2020; HF Adafactor docs):
            # scale_parameter=False, relative_step=False, warmup_init=False
            opt = Adafactor(groups, lr=t.lr, scale_parameter=False, relative_step=False, warmup_init=False)
        else:
            from t5lab.train.fast import adamw_kwargs, resolve_precision

            precision = resolve_precision(t.precision, self.cfg.trainer.accelerator)
            opt = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), **adamw_kwargs(t.fused_optimizer, precision, t.gradient_clip_val))
        sched = self._scheduler(opt)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": sched}

    def _scheduler(self, opt: torch.optim.Optimizer) -> dict[str, Any] | None:
        from transformers import (
            get_constant_schedule_with_warmup,
            get_cosine_schedule_with_warmup,
            get_linear_schedule_with_warmup,
        )

        t = self.cfg.train
        if t.schedule == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=t.plateau_factor, patience=t.plateau_patience)
            return {"scheduler": plateau, "monitor": "val_loss", "interval": "epoch", "strict": False}
        if t.schedule == "cyclic":
            # triangular cycle between lr/10 and lr (Smith 2017); momentum cycling is off for Adam-style optimisers
            cyc = torch.optim.lr_scheduler.CyclicLR(
                opt, base_lr=t.lr / 10, max_lr=t.lr, step_size_up=t.cyclic_steps, cycle_momentum=False
            )
            return {"scheduler": cyc, "interval": "step"}
        total = int(self.trainer.estimated_stepping_batches)
        if t.schedule == "linear":
            s = get_linear_schedule_with_warmup(opt, t.warmup_steps, total)
        elif t.schedule == "cosine":
            s = get_cosine_schedule_with_warmup(opt, t.warmup_steps, total)
        elif t.warmup_steps:
            s = get_constant_schedule_with_warmup(opt, t.warmup_steps)
        else:
            return None
        return {"scheduler": s, "interval": "step"}

    # -- checkpoints -------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["t5lab"] = {
            "samples_seen": self.samples_seen,
            "tokens_seen": self.tokens_seen,
            "config": self.cfg.to_dict(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("t5lab", {})
        self.samples_seen = int(state.get("samples_seen", 0))
        self.tokens_seen = int(state.get("tokens_seen", 0))
