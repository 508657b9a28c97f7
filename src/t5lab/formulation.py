"""The one place that turns task records into model batches, per variant.

Formulations (``kind``):

- ``seq2seq`` (``t5``, ``pseudo_dec``): encoder reads ``input + </s>``, decoder predicts
  ``target + </s>``; ``labels`` padded with -100 (the model shifts them right itself).
- ``prefix_lm`` (``decoder_only`` with ``prefix_lm=True``): one sequence
  ``input </s> target </s>``; the input part and the separator form a bidirectional prefix
  (``prefix_mask`` = 1 there) and the loss is on the target only (Raffel et al. 2020, sec. 3.2.1).
- ``causal_lm`` (``gpt2``, ``decoder_only``): the same concatenation with a causal mask; the loss
  is on the target only (``data.loss_on: target``) or on every token (``all``).
- ``classification`` (``enct5``): ``text + </s>`` and an int / float / multi-hot label.

Text tasks (records ``Pair("", text)``) are first re-cut by the text objective: ``causal_lm``
(no input), ``prefix_lm`` (split at a seeded random token position: the prefix is the input) or
``span_corruption`` (``t5lab.tasks.span_corruption``: corrupted text is the input, the dropped
spans the target; Raffel et al. 2020, sec. 3.1.4).

Labels are aligned with ``input_ids`` for the decoder-only kinds (not pre-shifted: HF causal-LM
convention, the model shifts). :func:`token_loss` computes token-weighted sums so that a split's
loss is a sum over all of its target tokens divided by their count, never a mean of batch means.

Importable without Lightning: the explorer uses it to recompute validation losses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from t5lab.plan import Plan

KINDS = ("seq2seq", "prefix_lm", "causal_lm", "classification")
IGNORE = -100


# ------------------------------------------------------------------------------------------------
# Records -> examples -> batches
# ------------------------------------------------------------------------------------------------


@dataclass
class Example:
    """One encoded record. Lists of token ids; ``target`` ids end with eos (empty: classification)."""

    input_ids: list[int]
    labels: list[int] | int | float | list[float]
    prompt: list[int]  # what greedy decoding starts from (seq2seq: encoder input)
    target: list[int]  # reference continuation for exact match (eos included)
    prefix_len: int = 0  # prefix_lm: tokens of the bidirectional prefix
    source: str = ""  # input text, for samples
    reference: str = ""  # target text (or label), for samples
    decoder_input: list[int] | None = None  # seq2seq: encoder-side input_ids are `input_ids`


class Formulation:
    """Encodes records for one formulation kind and collates them into batches.

    Args:
        kind: seq2seq | prefix_lm | causal_lm | classification.
        tokenizer: A tokenizer with T5 conventions (pad=0, eos=1, sentinels for span corruption).
        max_length: Tokens per side (input, target), eos included; longer sides are truncated.
        loss_on: ``target`` or ``all`` (causal_lm only).
        text_objective: For text tasks: causal_lm | prefix_lm | span_corruption.
        seed: Seeds the per-record random choices of the text objectives.
        noise_density: Span corruption: fraction of tokens dropped.
        mean_noise_span_length: Span corruption: mean span length.
        num_labels: Classification: number of classes (multi-hot width).
        problem_type: Classification: HF problem type.
        reverse_target: Targets are written backwards (their tokens in reverse order, eos last):
            the model learns to write them so, and greedy decodings are compared with the reversed
            reference (exact match is unchanged by the reversal); ``Example.reference`` keeps the
            task's own target text.
        echo_input: The model writes each input token before its target token (``s0 v0 s1 v1 ...``
            then eos), a scratchpad for tasks with one target token per input token (histogram):
            the token that predicts ``v_j`` is then ``s_j`` itself. Decodings are scored on the
            target tokens only (every second one); a record whose input and target differ in
            length is a ``ConfigError``.
    """

    def __init__(
        self,
        kind: str,
        tokenizer: Any,
        *,
        max_length: int = 64,
        loss_on: str = "target",
        text_objective: str | None = None,
        seed: int = 0,
        noise_density: float = 0.15,
        mean_noise_span_length: float = 3.0,
        num_labels: int = 2,
        problem_type: str | None = None,
        reverse_target: bool = False,
        echo_input: bool = False,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"formulation kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind = kind
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.loss_on = loss_on
        self.text_objective = text_objective
        self.seed = seed
        self.noise_density = noise_density
        self.mean_noise_span_length = mean_noise_span_length
        self.num_labels = num_labels
        self.problem_type = problem_type
        self.reverse_target = reverse_target
        self.echo_input = echo_input
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 1
        from t5lab.tokenizers import CharEncoder

        self._char_encoder = CharEncoder.for_tokenizer(tokenizer)  # None: not a char tokenizer

    @classmethod
    def from_plan(cls, plan: Plan, tokenizer: Any) -> Formulation:
        """The formulation a resolved config trains with (:func:`t5lab.plan.resolve`)."""
        data = plan.cfg.data
        return cls(
            plan.kind,
            tokenizer,
            max_length=data.max_length,
            loss_on=data.loss_on,
            text_objective=plan.objective,
            seed=data.seed,
            noise_density=data.noise_density,
            mean_noise_span_length=data.mean_noise_span_length,
            num_labels=plan.num_labels,
            problem_type=plan.problem_type,
            reverse_target=data.reverse_target,
            echo_input=data.echo_input,
        )

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any, task: Any = None) -> Formulation:
        """The formulation of an ``ExperimentConfig``: resolves it (:meth:`from_plan`).

        ``task`` is accepted for callers that built it already; the plan builds its own.
        """
        from t5lab.plan import resolve  # the plan imports no formulation code: one-way edge

        return cls.from_plan(resolve(cfg), tokenizer)

    # -- encoding ------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        """Token ids without eos, truncated so that one eos still fits in ``max_length``."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return list(ids)[: self.max_length - 1]

    def _text_pair(self, text: str, index: int) -> tuple[list[int], list[int]]:
        """Re-cut a text record into (input ids, target ids), both without eos."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = list(ids)
        rng = random.Random(f"{self.seed}:{index}")  # per-record, independent of the batch order
        if self.text_objective == "causal_lm":
            return [], ids[: self.max_length - 1]
        if self.text_objective == "prefix_lm":
            from t5lab.tasks.text import prefix_lm  # cut at a seeded random word boundary (T5 paper)

            pair = prefix_lm(text, rng)
            src, tgt = self._ids(pair.input), self._ids(pair.target)
            return src, tgt
        if self.text_objective == "span_corruption":
            from t5lab.tasks.span_corruption import span_corruption  # T5's noise, owned by the tasks area
            from t5lab.tokenizers import sentinel_ids

            ids = ids[: self.max_length - 1]
            inp, tgt = span_corruption(
                ids,
                sentinel_ids(self.tokenizer),
                noise_density=self.noise_density,
                mean_span_length=self.mean_noise_span_length,
                rng=rng,
            )
            return list(inp)[: self.max_length - 1], list(tgt)[: self.max_length - 1]
        raise ValueError(f"text objective must be causal_lm, prefix_lm or span_corruption, got {self.text_objective!r}")

    def _ids_many(self, texts: list[str]) -> list[list[int]]:
        """Batch version of :meth:`_ids` (one tokenizer call: much faster than one per record)."""
        if not texts:
            return []
        keep = self.max_length - 1
        if self._char_encoder is not None:  # the char tokenizer's output, from a dict lookup
            return [ids[:keep] for ids in self._char_encoder(texts)]
        return [list(ids)[:keep] for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def encode(self, record: Any, index: int = 0, ids: tuple[list[int], list[int]] | None = None) -> Example:
        """Encode one task record (``Pair`` or ``Labelled``).

        Args:
            record: The task record.
            index: Position of the record in its split; seeds the text objectives' random choices.
            ids: Already tokenized (input, target) ids without eos (used by :meth:`encode_all`).
        """
        eos = self.eos_id
        if self.kind == "classification":
            text = record.text
            ids = (ids[0] if ids is not None else self._ids(text)) + [eos]
            label = record.label
            if self.problem_type == "multi_label_classification":
                hot = [0.0] * self.num_labels
                for c in label:
                    hot[c] = 1.0
                label = hot
            return Example(ids, label, prompt=ids, target=[], source=text, reference=str(record.label))
        if self.text_objective is not None:
            src, tgt = self._text_pair(record.target, index)
            source = self.tokenizer.decode(src)
            reference = self.tokenizer.decode(tgt)
        else:
            src, tgt = ids if ids is not None else (self._ids(record.input), self._ids(record.target))
            source, reference = record.input, record.target
        if self.echo_input:
            tgt = echoed(src, tgt, index)
        target = (tgt[::-1] if self.reverse_target else tgt) + [eos]
        if self.kind == "seq2seq":
            enc = src + [eos]
            return Example(enc, list(target), prompt=enc, target=target, source=source, reference=reference)
        # decoder-only: one sequence `input </s> target </s>`; eos doubles as the separator, so an
        # empty input (text causal LM) starts with </s> acting as BOS.
        prompt = src + [eos]
        ids = prompt + target
        if self.kind == "causal_lm" and self.loss_on == "all":
            labels = [IGNORE] + ids[1:]  # position 0 is never predicted (nothing precedes it)
        else:
            labels = [IGNORE] * len(prompt) + target
        prefix = len(prompt) if self.kind == "prefix_lm" else 0
        return Example(ids, labels, prompt=prompt, target=target, prefix_len=prefix, source=source, reference=reference)

    def encode_all(self, records: list[Any]) -> list[Example]:
        """Encode a split (record ``i`` gets index ``i``); tokenizes in one batch where possible."""
        if self.text_objective is not None:
            return [self.encode(r, i) for i, r in enumerate(records)]
        if self.kind == "classification":
            firsts = self._ids_many([r.text for r in records])
            return [self.encode(r, i, (a, [])) for i, (r, a) in enumerate(zip(records, firsts))]
        srcs = self._ids_many([r.input for r in records])
        tgts = self._ids_many([r.target for r in records])
        return [self.encode(r, i, (a, b)) for i, (r, a, b) in enumerate(zip(records, srcs, tgts))]

    # -- collation ---------------------------------------------------------------------------
    def collate(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        """Right-padded training/teacher-forcing batch in the contract of docs/developing.md."""
        ids = _pad([e.input_ids for e in examples], self.pad_id)  # (B, T)
        batch = {"input_ids": ids, "attention_mask": (_pad([[1] * len(e.input_ids) for e in examples], 0))}
        if self.kind == "classification":
            labels = [e.labels for e in examples]
            if self.problem_type in ("regression", "multi_label_classification"):
                batch["labels"] = torch.tensor(labels, dtype=torch.float)  # (B,) or (B, C)
            else:
                batch["labels"] = torch.tensor(labels, dtype=torch.long)  # (B,)
            return batch
        batch["labels"] = _pad([e.labels for e in examples], IGNORE)  # (B, T_labels)
        if self.kind == "prefix_lm":
            batch["prefix_mask"] = _pad([[1] * e.prefix_len for e in examples], 0, width=ids.shape[1])
        return batch

    def collate_packed(self, examples: list[Example], pack_length: int | None = None) -> dict[str, torch.Tensor]:
        """The same examples as :meth:`collate`, packed into fewer rows (``t5lab.train.packing``).

        Rows are filled first-fit-decreasing; each example is one contiguous segment (ids
        ``1, 2, ...`` per row, 0 = padding). ``pack_length=None`` packs into rows as long as the
        batch's longest example (per side for seq2seq), so packing never needs more tokens than
        :meth:`collate`; a fixed ``pack_length`` gives every batch that row length and pads the
        row count up to a multiple of 8 (``packing.row_count``), for static shapes.

        Args:
            examples: The batch.
            pack_length: Tokens per row (each side for seq2seq), or None.

        Returns:
            seq2seq: ``input_ids``, ``segment_ids`` ``(R, Ls)``, ``labels``, ``decoder_segment_ids``
            ``(R, Lt)``; decoder-only: ``input_ids``, ``labels``, ``segment_ids`` ``(R, L)`` and
            ``prefix_mask`` for a prefix LM.

        Raises:
            ValueError: A classification formulation, or an example longer than ``pack_length``.
        """
        from t5lab.train.packing import first_fit_decreasing, row_count

        if self.kind == "classification":
            raise ValueError("classification batches cannot be packed: one sequence per row is the model's input")
        if pack_length is not None and pack_length < 1:
            raise ValueError(f"pack_length must be >= 1, got {pack_length}")
        seq2seq = self.kind == "seq2seq"
        sides = [[e.input_ids for e in examples]] + ([[e.labels for e in examples]] if seq2seq else [])
        capacity = [pack_length or max(len(s) for s in side) for side in sides]
        lengths = [tuple(len(side[i]) for side in sides) for i in range(len(examples))]
        rows = first_fit_decreasing(lengths, capacity)
        n_rows = row_count(len(rows), len(examples), pack_length is not None)
        rows += [[] for _ in range(n_rows - len(rows))]  # all-padding rows (fixed shapes only)

        def lay_out(side: int, values: list[list[Any]], pad: Any) -> tuple[torch.Tensor, torch.Tensor]:
            tokens, segments = [], []
            for row in rows:
                t = [x for i in row for x in values[i]]
                s = [k + 1 for k, i in enumerate(row) for _ in values[i]]
                fill = capacity[side] - len(t)
                tokens.append(t + [pad] * fill)
                segments.append(s + [0] * fill)
            return torch.tensor(tokens), torch.tensor(segments)  # (R, L) each

        ids, segment_ids = lay_out(0, [e.input_ids for e in examples], self.pad_id)
        batch = {"input_ids": ids, "segment_ids": segment_ids}
        if seq2seq:
            batch["labels"], batch["decoder_segment_ids"] = lay_out(1, [e.labels for e in examples], IGNORE)
            return batch
        batch["labels"] = lay_out(0, [e.labels for e in examples], IGNORE)[0]
        if self.kind == "prefix_lm":
            prefix = [[1] * e.prefix_len + [0] * (len(e.input_ids) - e.prefix_len) for e in examples]
            batch["prefix_mask"] = lay_out(0, prefix, 0)[0]
        return batch

    def collate_prompts(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        """Generation prompts: right-padded for seq2seq (encoder input), left-padded for decoders."""
        prompts = [e.prompt for e in examples]
        if self.kind == "seq2seq":
            return {"input_ids": _pad(prompts, self.pad_id), "attention_mask": _pad([[1] * len(p) for p in prompts], 0)}
        # decoder-only generation appends to the right, so prompts are left-padded
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts])  # (B, P)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = {"input_ids": ids, "attention_mask": mask}
        if self.kind == "prefix_lm":
            out["prefix_mask"] = mask.clone()  # the whole prompt is the bidirectional prefix
        return out

    def decode(self, ids: list[int]) -> str:
        """Token ids -> text, stopping at eos and dropping pads (turned back with ``reverse_target``)."""
        return decoded_text(
            self.tokenizer, ids, self.reverse_target, eos=self.eos_id, pad=self.pad_id, echo_input=self.echo_input
        )


def _pad(seqs: list[list[Any]], value: Any, width: int | None = None) -> torch.Tensor:
    width = max([len(s) for s in seqs] + [width or 0, 1])
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in seqs])


# ------------------------------------------------------------------------------------------------
# Token-weighted losses and accuracies
# ------------------------------------------------------------------------------------------------


def lm_logits_labels(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align logits with the labels they predict.

    seq2seq logits (B, T, V) already align with labels (B, T); decoder-only logits at position t
    predict the token at t+1, so they are shifted: (B, T-1, V) vs labels[:, 1:].
    """
    if kind == "seq2seq":
        return logits, labels
    return logits[:, :-1], labels[:, 1:]


def token_loss(kind: str, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy, number of loss tokens and number of correct argmax tokens.

    Args:
        kind: The formulation kind (seq2seq, prefix_lm or causal_lm).
        logits: (B, T, V) model logits.
        labels: (B, T) labels with -100 where no loss is taken.

    Returns:
        ``(loss_sum, n_tokens, n_correct)`` scalars; mean loss = loss_sum / n_tokens.
    """
    logits, labels = lm_logits_labels(kind, logits, labels)
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()  # (B*T, V)
    flat_labels = labels.reshape(-1)  # (B*T,)
    loss_sum = torch.nn.functional.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE, reduction="sum")
    valid = flat_labels != IGNORE
    correct = ((flat_logits.argmax(-1) == flat_labels) & valid).sum()
    return loss_sum, valid.sum(), correct


def decoding_matches(
    pred: list[list[int]], target: list[list[int]], eos: int, echo_input: bool = False
) -> tuple[int, int, int]:
    """How greedy decodings compare with their references: exact rows, matched tokens, reference tokens.

    Args:
        pred: Decoded token ids per row; a row ends at its first ``eos`` (kept), the rest is padding.
        target: Reference ids per row, ``eos`` included, ``-100`` padded.
        eos: The eos token id.
        echo_input: Rows write each input token before its target token (``data.echo_input``):
            both sides are compared on their target tokens (every second one before eos) and eos.

    Returns:
        ``(exact, matches, total)``: rows whose decoding equals the reference up to and including
        eos; reference tokens that the decoding has at the same position (a decoding that stops
        early misses the rest; one that runs long loses only exact match); reference tokens.
    """
    exact = matches = total = 0
    for p, t in zip(pred, target):
        ref = [x for x in t if x != IGNORE]
        hyp = p[: p.index(eos) + 1] if eos in p else p
        if echo_input:
            ref, hyp = _outputs_only(ref, eos), _outputs_only(hyp, eos)
        exact += hyp == ref
        matches += sum(a == b for a, b in zip(hyp, ref))
        total += len(ref)
    return exact, matches, total


def _outputs_only(row: list[int], eos: int) -> list[int]:
    """An echoed row's target tokens (every second token before eos), then its eos if it has one."""
    body = row[: row.index(eos)] if eos in row else row
    return body[1::2] + ([eos] if eos in row else [])


def echoed(src: list[int], tgt: list[int], index: int = 0) -> list[int]:
    """``data.echo_input``: input token ``j`` written before target token ``j`` (``s0 v0 s1 v1 ...``)."""
    if len(src) != len(tgt):
        from t5lab.errors import ConfigError

        raise ConfigError(
            f"data.echo_input pairs input token j with target token j, but record {index} has {len(src)} input "
            f"and {len(tgt)} target tokens; use a task and tokenizer with one target token per input token "
            "(tokenizer.kind=word with min_frequency 2 gives each value seen twice its own token) or set "
            "data.echo_input=false"
        )
    return [t for pair in zip(src, tgt) for t in pair]


def decoded_text(
    tokenizer: Any,
    ids: list[int],
    reverse_target: bool = False,
    eos: int | None = None,
    pad: int | None = None,
    echo_input: bool = False,
) -> str:
    """The text of a greedy decoding: up to its eos, padding dropped, in the task's own order.

    Args:
        tokenizer: The run's tokenizer.
        ids: Generated token ids.
        reverse_target: The model writes targets backwards (``data.reverse_target``): turn them back.
        eos, pad: Token ids; default the tokenizer's.
        echo_input: The model writes each input token before its target token (``data.echo_input``):
            keep the target tokens, every second one.
    """
    eos = tokenizer.eos_token_id if eos is None else eos
    pad = tokenizer.pad_token_id if pad is None else pad
    out = []
    for t in ids:
        if t == eos:
            break
        if t != pad:
            out.append(t)
    out = out[::-1] if reverse_target else out
    return tokenizer.decode(out[1::2] if echo_input else out)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed loss, number of examples and number of correct predictions for a classifier.

    single-label: cross-entropy and argmax accuracy; multi-label: BCE summed over classes and
    exact-set accuracy; regression: squared error (no accuracy: 0 correct).
    """
    n = torch.tensor(labels.shape[0], device=logits.device)
    if problem_type == "regression":
        pred = logits.squeeze(-1).float()
        return ((pred - labels.float()) ** 2).sum(), n, torch.zeros((), device=logits.device, dtype=torch.long)
    if problem_type == "multi_label_classification":
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="sum")
        correct = ((logits > 0).float() == labels).all(-1).sum()
        return loss, n, correct
    loss = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
    return loss, n, (logits.argmax(-1) == labels).sum()
