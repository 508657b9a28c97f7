"""LightningModule for every formulation: token-weighted losses, greedy exact match, samples.

Validation (and test) metrics are sums over the whole split divided at the end: ``val_loss`` is
the token-weighted mean cross-entropy over every target token of the split and ``val_ppl`` its
exp (not a mean of batch means); ``val_token_acc`` is teacher-forced argmax accuracy and
``val_exact_match`` compares greedy decodings with the references token by token.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from t5lab.config import ExperimentConfig
from t5lab.errors import T5LabError
from t5lab.formulation import IGNORE, classification_loss, token_loss


class NonFiniteLossError(T5LabError):
    """The training loss became NaN or infinite."""




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
        self.samples_seen = 0  # training examples consumed, all ranks
        self.tokens_seen = 0  # training loss tokens consumed, all ranks
        self._acc: dict[str, torch.Tensor] = {}
        self._samples: list[tuple[str, str, str]] = []

    # -- forward / loss --------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        return self.model(**batch)

    def _loss_terms(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(summed loss, number of loss tokens or examples, number correct) for one batch."""
        logits = self(batch).logits
        if self.kind == "classification":
            return classification_loss(logits, batch["labels"], self.problem_type)
        return token_loss(self.kind, logits, batch["labels"])

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
        rank = self.trainer.global_rank if self._trainer is not None else 0
        torch.manual_seed(hash((self.cfg.train.seed, self.current_epoch, batch_idx, rank)) % (2**63))
        # Lightning's logging counter (`_batches_that_stepped`, which drives log_every_n_steps) comes
        # back one ahead after a restore from an epoch-end checkpoint; align it with global_step so a
        # resumed run logs the same rows as an uninterrupted one (tests/train/test_resume.py). In an
        # uninterrupted run without gradient accumulation the two are equal anyway.
        loop = self.trainer.fit_loop.epoch_loop
        if batch_idx == 0 and self.trainer.accumulate_grad_batches == 1 and hasattr(loop, "_batches_that_stepped"):
            loop._batches_that_stepped = self.global_step

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss_sum, n, _ = self._loss_terms(batch)
        loss = loss_sum / n.clamp(min=1)  # token-weighted mean over this batch
        bad = (~torch.isfinite(loss)).float()
        counts = torch.stack([torch.tensor(float(batch["input_ids"].shape[0]), device=loss.device), n.float()])
        if self.trainer.world_size > 1:  # every rank must stop together, and counters are global
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        if bad.item() > 0:
            run = self.run_dir or "the run directory"
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step} (epoch {self.current_epoch}); "
                f"stopped before updating the weights. Lower train.lr or set train.gradient_clip_val; the last good "
                f"checkpoint is {run}/checkpoints/last.ckpt (continue with: t5lab train --resume {run})"
            )
        self.samples_seen += int(counts[0].item())
        self.tokens_seen += int(counts[1].item())
        # `step` names the metrics.csv row: optimizer steps done once this batch is applied (Lightning's
        # own logging step restarts one off after a resume from an epoch-end checkpoint)
        self.log("step", float(self.global_step + 1), on_step=True, on_epoch=False)
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=int(counts[0]))
        self.log("samples", float(self.samples_seen), on_step=True, on_epoch=False, reduce_fx="max")
        self.log("tokens", float(self.tokens_seen), on_step=True, on_epoch=False, reduce_fx="max")
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    # -- evaluation ------------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, Any], prefix: str) -> None:
        valid = batch["index"] >= 0  # (B,)
        inputs = {k: v[valid] for k, v in batch["batch"].items()}
        if not bool(valid.any()):
            return
        loss_sum, n, correct = self._loss_terms(inputs)
        terms = {"loss_sum": loss_sum.detach().float(), "n": n.float(), "correct": correct.float()}
        if self.kind != "classification":
            target = batch["target"][valid]  # (B, L) reference tokens, eos included, -100 padded
            prompts = {k: v[valid] for k, v in batch["prompts"].items()}
            pred = self._generate(prompts, target.shape[1])  # (B, <=L)
            terms["exact"] = self._exact(pred, target).sum().float()
            terms["count"] = torch.tensor(float(target.shape[0]), device=target.device)
            self._keep_samples(batch["index"][valid], pred, prefix)
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
        """Greedy continuation tokens (B, <= max_new), prompt and decoder start stripped."""
        limit = self.cfg.train.max_new_tokens or max_new
        tok = self.tokenizer
        out = self.model.generate(
            **prompts,
            max_new_tokens=limit,
            do_sample=False,
            num_beams=1,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        if self.kind == "seq2seq":
            return out[:, 1:]  # drop decoder_start_token_id
        return out[:, prompts["input_ids"].shape[1] :]

    def _exact(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the prediction equals the reference up to and including the first eos."""
        eos = self.tokenizer.eos_token_id
        result = []
        for p, t in zip(pred.tolist(), target.tolist()):
            ref = [x for x in t if x != IGNORE]
            hyp = p[: p.index(eos) + 1] if eos in p else p
            result.append(hyp == ref)
        return torch.tensor(result, device=pred.device)

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
        tok = self.tokenizer
        out = []
        for t in ids:
            if t == tok.eos_token_id:
                break
            if t != tok.pad_token_id:
                out.append(t)
        return tok.decode(out)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._acc, self._samples = {}, []

    on_test_epoch_start = on_validation_epoch_start

    def _finish_eval(self, prefix: str) -> None:
        names = ("loss_sum", "n", "correct", "exact", "count")
        device = self.device
        sums = torch.stack([self._acc.get(f"{prefix}_{k}", torch.zeros((), device=device)).to(device) for k in names])
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        loss_sum, n, correct, exact, count = sums.tolist()
        if n == 0:
            return
        metrics = {f"{prefix}_loss": loss_sum / n}
        if self.kind == "classification":
            if self.problem_type != "regression":
                metrics[f"{prefix}_accuracy"] = correct / n
        else:
            metrics[f"{prefix}_ppl"] = math.exp(min(loss_sum / n, 700.0))
            metrics[f"{prefix}_token_acc"] = correct / n
            metrics[f"{prefix}_exact_match"] = exact / max(count, 1.0)
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
            from t5lab.train.io import atomic_write_text

            path = Path(self.run_dir) / "samples.txt"
            old = path.read_text() if path.exists() else ""
            atomic_write_text(path, old + text + "\n")

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
