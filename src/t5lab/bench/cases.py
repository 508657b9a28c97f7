"""The comparisons of ``t5lab bench``: each builds its candidates and reference side by side
(lm_training, enct5, fast_path, generation, overhead; copy_time is a record).

Shapes: "small" is the t5-small shape (d_model 512, 6+6 layers, 8 heads, d_ff 2048, vocab 32128);
"tiny" is d_model 128, 2+2 layers, vocab 384. Data are random token ids from a seeded generator,
identical for every candidate of a comparison.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import torch
from transformers import T5Config, T5ForConditionalGeneration, T5ForSequenceClassification

from t5lab.bench.core import Comparison, interleaved
from t5lab.variants import Variant, get_variant

SHAPES: dict[str, dict] = {
    "small": dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8),
    "tiny": dict(vocab_size=384, d_model=128, d_kv=32, d_ff=512, num_layers=2, num_heads=4),
}

COMMON = dict(dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def t5_config(shape: str, **overrides) -> T5Config:
    return T5Config(**{**SHAPES[shape], **COMMON, **overrides})


# ---------------------------------------------------------------------------------------------
# model builders: the same weights layout for each variant, seeded


REFERENCE = "hf_t5"  # the reference rows' name: transformers' T5, i.e. the `t5` variant


def bench_variant(name: str) -> Variant:
    """The LM variant a bench candidate name stands for (``hf_t5``: the ``t5`` variant).

    Raises:
        ValueError: The variant is not a T5-family language model (the bench shapes are T5 shapes).
    """
    variant = get_variant("t5" if name == REFERENCE else name)
    if not variant.generates or variant.family != "t5" or variant.config_class is None or variant.model_class is None:
        raise ValueError(f"bench LM candidate {name!r}: give a T5-family language-model variant with config and model classes")
    return variant


def build_lm(variant: str, shape: str, seed: int = 0) -> torch.nn.Module:
    """A fresh LM of the given t5lab variant name (registered ones too) at a bench shape."""
    v = bench_variant(variant)
    torch.manual_seed(seed)
    return v.model_class()(v.config_class().from_dict(t5_config(shape).to_dict()))


def lm_batch(variant: str, vocab: int, batch: int, src_len: int, tgt_len: int, seed: int = 0) -> dict:
    """Random (input, target) ids formulated for the variant; every variant sees the same tokens."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (batch, src_len), generator=g)
    tgt = torch.randint(3, vocab, (batch, tgt_len), generator=g)
    if bench_variant(variant).objective == "seq2seq":
        return dict(input_ids=src, attention_mask=torch.ones_like(src), labels=tgt)
    seq = torch.cat([src, tgt], dim=1)
    labels = seq.clone()
    labels[:, :src_len] = -100
    prefix = torch.zeros_like(seq)
    prefix[:, :src_len] = 1
    return dict(input_ids=seq, attention_mask=torch.ones_like(seq), labels=labels, prefix_mask=prefix)


def train_step_fn(model, batch, optimizer, autocast_dtype=None, device_type="cpu") -> Callable[[], None]:
    def step():
        ctx = (
            torch.autocast(device_type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


# ---------------------------------------------------------------------------------------------
# 1. training tokens/s of each LM variant vs transformers' T5


def count_flops(fn: Callable[[], object]) -> float:
    """Matmul FLOPs of one call of ``fn`` (forward and backward), counted by torch's FlopCounterMode.

    On CPU the counter does not see sdpa's fused kernel (it reports 0 for
    ``scaled_dot_product_attention``, torch 2.13), so the attention scores (QK^T, AV) of sdpa models
    are left out: what is counted are the linear layers and the LM head, where most FLOPs are at the
    bench shapes (5% or less of the total at 128 tokens, d_model 512).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


LOGITS_TO_KEEP = "+logits_to_keep"


def lm_training(shape: str = "small", batch: int = 8, src_len: int = 64, tgt_len: int = 64,
                repeats: int = 3,
                variants=("pseudo_dec", "decoder_only", "decoder_only" + LOGITS_TO_KEEP)) -> list[Comparison]:
    """Training tokens/s of each LM variant vs transformers' T5, same sizes and tokens.

    ``decoder_only`` is the same call a researcher makes (``model(**batch)``: logits at all
    ``src_len + tgt_len`` positions). ``decoder_only+logits_to_keep`` is the same model and batch
    with ``logits_to_keep=tgt_len + 1``: the LM head runs only at the positions that predict a
    target token (the last input position and the targets), which is what the harness's training
    step passes. Each row's ``extra`` holds both models' matmul FLOPs per step (counted once with
    FlopCounterMode, not timed) and ``flop_ratio`` = reference / candidate FLOPs, the speed-up
    that equal FLOP/s would give: the variants are different architectures at the same sizes.
    """
    cfg = t5_config(shape)
    fns, work, flops = {}, {}, {}
    for variant in ("hf_t5", *variants):
        base = variant.removesuffix(LOGITS_TO_KEEP)
        model = build_lm(base, shape).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        data = lm_batch(base, cfg.vocab_size, batch, src_len, tgt_len)
        if variant.endswith(LOGITS_TO_KEEP):
            if bench_variant(base).objective != "causal_lm":
                raise ValueError(f"{variant}: logits_to_keep is a decoder-only candidate")
            data["logits_to_keep"] = tgt_len + 1  # positions src_len - 1 ... end predict the targets
        fns[variant] = train_step_fn(model, data, opt)
        flops[variant] = count_flops(fns[variant])  # also an extra warm-up step
        work[variant] = batch * (src_len + tgt_len)
    m = interleaved(fns, work, "tokens", repeats=repeats, warmup=1)
    return [
        Comparison("lm_training", v, "hf_t5", "train tokens/s", m[v].rate, m["hf_t5"].rate, ">= 1.0x",
                   extra={"shape": shape, "batch": batch, "src_len": src_len, "tgt_len": tgt_len,
                          "train_flops": flops[v], "reference_train_flops": flops["hf_t5"],
                          "flop_ratio": flops["hf_t5"] / flops[v]})
        for v in variants
    ]


# ---------------------------------------------------------------------------------------------
# 2. EncT5 vs transformers' T5ForSequenceClassification


def enct5_vs_t5_classification(shape: str = "small", batch: int = 8, seq_len: int = 128,
                               num_labels: int = 2, repeats: int = 3) -> list[Comparison]:
    """Samples/s of EncT5 (1 decoder layer) vs transformers' ``T5ForSequenceClassification``,
    training steps and inference, same weights layout and data.

    ``extra`` holds both models' counted matmul FLOPs and their ratio, and for inference
    ``encoder_only_ratio``: the reference's time over that of EncT5's encoder alone (the same
    transformers ``T5Stack`` the reference runs), measured in the same rounds. That is the ceiling
    of the inference ratio for any decoder cost, since EncT5 cannot skip its encoder.
    """
    variant = get_variant("enct5")
    torch.manual_seed(0)
    ref_cfg = t5_config(shape, num_labels=num_labels)
    ref = T5ForSequenceClassification(ref_cfg)
    enc_cfg = variant.config_class().from_dict(t5_config(shape).to_dict())
    enc_cfg.num_decoder_layers = 1
    enc_cfg.num_labels = num_labels
    enc_cfg.problem_type = "single_label_classification"
    enc = variant.model_class()(enc_cfg)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, ref_cfg.vocab_size, (batch, seq_len), generator=g)
    ids[:, -1] = 1  # T5ForSequenceClassification pools the eos token
    data = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                labels=torch.randint(0, num_labels, (batch,), generator=g))
    rows = []
    fns, flops = {}, {}
    for name, model in (("t5_seq_cls", ref), ("enct5", enc)):
        model.train()
        fns[name] = train_step_fn(model, data, torch.optim.AdamW(model.parameters(), lr=1e-4))
        flops[name] = count_flops(fns[name])  # also an extra warm-up step
    m = interleaved(fns, batch, "samples", repeats=repeats)
    rows.append(Comparison("enct5_train", "enct5", "t5_seq_cls", "train samples/s",
                           m["enct5"].rate, m["t5_seq_cls"].rate, ">= 2.5x",
                           extra={"shape": shape, "batch": batch, "seq_len": seq_len,
                                  "flops": flops["enct5"], "reference_flops": flops["t5_seq_cls"],
                                  "flop_ratio": flops["t5_seq_cls"] / flops["enct5"]}))
    infer = {}
    inputs = {k: v for k, v in data.items() if k != "labels"}
    for name, model in (("t5_seq_cls", ref), ("enct5", enc)):
        model.eval()

        def run(model=model):
            with torch.inference_mode():
                model(**inputs)

        infer[name] = run
        flops[name] = count_flops(run)

    # EncT5's encoder alone (transformers' T5Stack, as in the reference), timed in the same rounds:
    # reference / encoder is the speed-up EncT5 would have if its decoder and head were free
    def encoder_only():
        with torch.inference_mode():
            enc.encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])

    infer["enct5_encoder_only"] = encoder_only
    m = interleaved(infer, batch, "samples", repeats=repeats)
    rows.append(Comparison("enct5_infer", "enct5", "t5_seq_cls", "inference samples/s",
                           m["enct5"].rate, m["t5_seq_cls"].rate, ">= 2.5x",
                           extra={"shape": shape, "batch": batch, "seq_len": seq_len,
                                  "flops": flops["enct5"], "reference_flops": flops["t5_seq_cls"],
                                  "flop_ratio": flops["t5_seq_cls"] / flops["enct5"],
                                  "encoder_only_ratio": m["t5_seq_cls"].median_s / m["enct5_encoder_only"].median_s}))
    return rows


# ---------------------------------------------------------------------------------------------
# 3. fast path (bf16 autocast + torch.compile + fused AdamW) vs fp32 eager


def matmul_rate(dtype: torch.dtype, n: int = 1024, repeats: int = 3) -> float:
    """Measured dense matmul FLOP/s on this machine for ``dtype`` (the MFU denominator)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def t5_train_flops(cfg: T5Config, batch: int, src_len: int, tgt_len: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward), matmuls only.

    Per token a linear layer of p weights costs 2p FLOPs forward (Kaplan et al. 2020, sec. 2.1);
    attention adds 2 * 2 * T * (heads * d_kv) per token per layer for QK^T and AV.
    """
    d, dff, inner = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv
    ff = (3 if cfg.is_gated_act else 2) * d * dff
    attn_proj = 4 * d * inner
    enc_layer = attn_proj + ff
    dec_layer = 2 * attn_proj + ff
    fwd = 2 * batch * (
        src_len * cfg.num_layers * enc_layer
        + tgt_len * (cfg.num_decoder_layers * dec_layer + d * cfg.vocab_size)
    )
    fwd += 2 * 2 * batch * inner * (
        cfg.num_layers * src_len**2 + cfg.num_decoder_layers * (tgt_len**2 + tgt_len * src_len)
    )
    return 3 * fwd


def bf16_helps(peak32: float, peak16: float) -> bool:
    """bf16 autocast pays only where the CPU/GPU has native bf16 matmuls (AMX, AVX512-BF16, tensor
    cores); on an AVX2-only CPU bf16 matmuls are emulated and ~100x slower than fp32."""
    return peak16 > 1.2 * peak32


def fast_path(shape: str = "small", batch: int = 8, src_len: int = 128, tgt_len: int = 32,
              repeats: int = 3, compile: bool | str = "auto", precision: str = "auto") -> list[Comparison]:
    """The harness's fast path (precision, compile, fused AdamW as ``"auto"`` resolves them here, or
    forced) against fp32 eager with the for-loop AdamW, on the same model, data and weights.

    MFU is model FLOPs per second (:func:`t5_train_flops`) over the dense matmul rate measured in
    this run for the dtype the candidate computes in.
    """
    from t5lab.train.fast import resolve_compile

    cfg = t5_config(shape)
    data = lm_batch("hf_t5", cfg.vocab_size, batch, src_len, tgt_len)
    peak32, peak16 = matmul_rate(torch.float32), matmul_rate(torch.bfloat16)
    use_bf16 = bf16_helps(peak32, peak16) if precision == "auto" else precision == "bf16"
    compile = resolve_compile(compile, "cpu")
    torch.manual_seed(0)
    eager = T5ForConditionalGeneration(cfg).train()
    fast = T5ForConditionalGeneration(cfg).train()
    fast.load_state_dict(eager.state_dict())
    fast_model = torch.compile(fast) if compile else fast
    fns = {
        "fp32_eager": train_step_fn(eager, data, torch.optim.AdamW(eager.parameters(), lr=1e-4)),
        "fast": train_step_fn(fast_model, data,
                              torch.optim.AdamW(fast.parameters(), lr=1e-4, fused=True),
                              autocast_dtype=torch.bfloat16 if use_bf16 else None),
    }
    # the MFU denominator is timed inside the same interleaved rounds, so that it sees the same load
    # as the training steps (a one-off measurement on a shared machine can be off by 2x)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    fns["matmul_fp32"] = lambda: a @ b
    tokens = batch * (src_len + tgt_len)
    m = interleaved(fns, {"fp32_eager": tokens, "fast": tokens, "matmul_fp32": 2 * n**3}, "tokens",
                    repeats=repeats, warmup=2)
    peak32 = max(m["matmul_fp32"].work_per_call / t for t in m["matmul_fp32"].seconds)  # best round
    flops = t5_train_flops(cfg, batch, src_len, tgt_len)
    name = "+".join([("bf16" if use_bf16 else "fp32"), *(["compile"] if compile else []), "fused"])
    return [Comparison(
        "fast_path", name, "fp32_eager", "train tokens/s", m["fast"].rate, m["fp32_eager"].rate,
        ">= 1.8x",
        extra={"shape": shape, "batch": batch, "src_len": src_len, "tgt_len": tgt_len,
               "matmul_gflops_fp32": peak32 / 1e9, "matmul_gflops_bf16": peak16 / 1e9,
               "mfu_fp32_eager": flops / m["fp32_eager"].median_s / peak32,
               "mfu_fast": flops / m["fast"].median_s / (peak16 if use_bf16 else peak32)},
    )]


# ---------------------------------------------------------------------------------------------
# 5. cached generation ms/token vs transformers' generate on T5


def generation(shape: str = "small", prompt_len: int = 32, new_tokens: int = 32, batch: int = 1,
               repeats: int = 3, variants=("pseudo_dec", "decoder_only")) -> list[Comparison]:
    cfg = t5_config(shape)
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, cfg.vocab_size, (batch, prompt_len), generator=g)
    fns = {}
    for variant in ("hf_t5", *variants):
        model = build_lm(variant, shape).eval()

        def run(model=model):
            with torch.inference_mode():
                out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                     max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                     do_sample=False, use_cache=True)
            return out

        fns[variant] = run
    m = interleaved(fns, new_tokens, "tokens", repeats=repeats)
    return [
        Comparison("generation", v, "hf_t5", "ms/token", 1e3 * m[v].median_s / new_tokens,
                   1e3 * m["hf_t5"].median_s / new_tokens, "<= 1.0x", higher_is_better=False,
                   extra={"shape": shape, "prompt_len": prompt_len, "new_tokens": new_tokens})
        for v in variants
    ]


# ---------------------------------------------------------------------------------------------
# 4. overhead-bound regime: the harness's training step vs a plain PyTorch/HF loop


def _tiny_experiment(shape: str, batch: int, steps: int, task: str = "copy", max_len: int = 24) -> dict:
    """A harness config at a bench shape on a synthetic task with varied lengths, no validation."""
    s = SHAPES[shape]
    return {
        "name": "bench",
        "model": {"variant": "t5", "d_model": s["d_model"], "d_ff": s["d_ff"], "d_kv": s["d_kv"],
                  "num_heads": s["num_heads"], "num_layers": s["num_layers"]},
        "data": {"task": task, "options": {"min_len": 2, "max_len": max_len}, "train": 50 * batch, "val": 0,
                 "test": 0, "max_length": max_len + 2},
        "tokenizer": "byte",
        "train": {"batch_size": batch, "max_steps": steps, "lr": 1e-3, "progress_bar": False,
                  "log_every_n_steps": 10, "schedule": "constant"},
        "trainer": {"accelerator": "cpu", "devices": 1},
    }


class _StepClock:
    """Lightning callback: wall time between consecutive training-step ends (data, step, logging)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def make(self):
        import lightning.pytorch as pl

        clock = self

        class Clock(pl.Callback):
            def on_train_batch_end(self, *args, **kwargs) -> None:
                clock.ends.append(time.perf_counter())

        return Clock()


def overhead(shape: str = "tiny", batch: int | tuple[int, ...] = (32, 8), steps: int = 20, repeats: int = 3,
             overrides: tuple[str, ...] = ()) -> list[Comparison]:
    """Training samples/s of the harness (Lightning + bucketing + fused AdamW + auto settings) vs a
    plain loop a researcher would write (random padded batches, ``model(**batch).loss``, AdamW,
    gradient clipping), on the same model weights and training examples; one row per batch size.

    Batch 32 (the first row) is compute-bound on a 2-core AVX2 CPU: the step's matmuls alone run at
    the machine's GEMM rate for those shapes, so bucketing's cut in padded FLOPs is what the harness
    can gain. Batch 8 is added as the overhead-bound regime the issue describes (a fixed per-step
    cost of Python, dispatch and loop machinery is a large share of the step); each row records the
    model FLOPs per step and the GFLOP/s each loop achieves, next to the rate of the step's own GEMM
    shape timed in the same rounds.
    """
    batches = (batch,) if isinstance(batch, int) else tuple(batch)
    return [_overhead_row(shape, b, steps, repeats, overrides, first=i == 0) for i, b in enumerate(batches)]


def _overhead_row(shape: str, batch: int, steps: int, repeats: int, overrides: tuple[str, ...],
                  first: bool = True) -> Comparison:
    """One ``overhead`` row: each round runs ``steps`` steps of each loop, alternating; the first
    step of a round is not timed, round 0 is a warm-up (and compiles, if on)."""
    import copy
    import statistics
    import tempfile
    from pathlib import Path

    from t5lab.config import load_config
    from t5lab.train.fast import (
        maybe_compile,
        padding_fraction,
        resolve_compile,
        resolve_fused,
        resolve_precision,
    )
    from t5lab.train.module import T5LabModule
    from t5lab.train.run import build_pieces, make_trainer

    cfg = load_config(_tiny_experiment(shape, batch, steps), list(overrides))
    pieces = build_pieces(cfg)
    plain_model = copy.deepcopy(pieces.model).train()
    examples = pieces.datamodule.examples["train"]
    form = pieces.formulation
    plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=cfg.train.lr)
    g = torch.Generator().manual_seed(0)
    plain_shapes: list[tuple[int, int]] = []  # (source, target) widths of the plain loop's batches

    def plain_round() -> list[float]:
        order = torch.randperm(len(examples), generator=g).tolist()
        ends = []
        for i in range(steps):
            b = form.collate([examples[j] for j in order[i * batch : (i + 1) * batch]])
            plain_shapes.append((b["input_ids"].shape[1], b["labels"].shape[1]))
            plain_model(**b).loss.backward()
            torch.nn.utils.clip_grad_norm_(plain_model.parameters(), cfg.train.gradient_clip_val)
            plain_opt.step()
            plain_opt.zero_grad(set_to_none=True)
            ends.append(time.perf_counter())
        return ends

    module = T5LabModule(pieces.model, cfg, form.kind, tokenizer=pieces.tokenizer)
    fit_module = maybe_compile(module, cfg.train.compile, cfg.trainer.accelerator)

    def harness_round(tmp: Path) -> list[float]:
        clock = _StepClock()
        trainer = make_trainer(cfg, tmp, progress=False)
        trainer.callbacks.append(clock.make())
        trainer.fit(fit_module, datamodule=pieces.datamodule)
        return clock.ends

    # the GEMM of the step's feed-forward layer at its own size (tokens of a bucketed batch x d_model
    # @ d_model x d_ff), timed in the same rounds: the rate the step's matmuls can reach here
    mcfg = pieces.model.config
    tokens = batch * round(statistics.mean(len(e.input_ids) for e in examples))
    a, w = torch.randn(tokens, mcfg.d_model), torch.randn(mcfg.d_model, mcfg.d_ff)

    def gemm_round() -> float:
        start = time.perf_counter()
        for _ in range(50):
            a @ w
        return (time.perf_counter() - start) / 50

    per_step: dict[str, list[float]] = {"plain": [], "harness": []}
    gemm_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats + 1):  # round 0 warms up (and compiles, if on)
            rounds = [("plain", plain_round), ("harness", lambda r=r: harness_round(Path(tmp) / str(r)))]
            for name, fn in rounds if r % 2 == 0 else rounds[::-1]:
                ends = fn()
                if r > 0:
                    per_step[name].append((ends[-1] - ends[0]) / (len(ends) - 1))
            gemm_s.append(gemm_round())
    lengths = [len(e.input_ids) for e in examples]
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [order[i : i + batch] for i in range(0, len(order), batch)]
    sampler = pieces.datamodule.train_dataloader().batch_sampler
    harness_batches = list(sampler) if hasattr(sampler, "batches") else random_batches

    def step_flops(widths: list[tuple[int, int]], sizes: list[int]) -> float:  # mean model FLOPs per step
        return statistics.mean(t5_train_flops(mcfg, n, s, t) for (s, t), n in zip(widths, sizes))

    label_len = [len(e.labels) for e in examples]
    harness_widths = [(max(lengths[i] for i in b), max(label_len[i] for i in b)) for b in harness_batches]
    flops_plain = step_flops(plain_shapes, [batch] * len(plain_shapes))
    flops_harness = step_flops(harness_widths, [len(b) for b in harness_batches])
    plain_s, harness_s = statistics.median(per_step["plain"]), statistics.median(per_step["harness"])
    t = cfg.train
    suffix = "" if first else f"_batch{batch}"  # the first row keeps its historical names
    return Comparison(
        "overhead", f"harness{suffix}", f"plain_loop{suffix}", "train samples/s", batch / harness_s, batch / plain_s,
        ">= 3.0x",
        extra={"shape": shape, "batch": batch, "steps_per_round": steps, "task": cfg.data.task,
               "precision": resolve_precision(t.precision, "cpu"), "compile": resolve_compile(t.compile, "cpu"),
               "fused_adamw": resolve_fused(t.fused_optimizer, t.optimizer), "bucketing": pieces.datamodule.bucketing,
               "padding_fraction_plain": padding_fraction(random_batches, lengths),
               "padding_fraction_harness": padding_fraction(harness_batches, lengths),
               "step_ms_plain": 1e3 * plain_s, "step_ms_harness": 1e3 * harness_s,
               "step_ms_rounds_plain": [1e3 * x for x in per_step["plain"]],
               "step_ms_rounds_harness": [1e3 * x for x in per_step["harness"]],
               "gflop_per_step_plain": flops_plain / 1e9, "gflop_per_step_harness": flops_harness / 1e9,
               "gflops_achieved_plain": flops_plain / plain_s / 1e9,
               "gflops_achieved_harness": flops_harness / harness_s / 1e9,
               "gemm_gflops_step_shape": 2 * tokens * mcfg.d_model * mcfg.d_ff / min(gemm_s) / 1e9},
    )


# ---------------------------------------------------------------------------------------------
# 6. time to 99% exact match on copy with the quickstart config


def copy_time(repeats: int = 1, threshold: float = 0.99, overrides: tuple[str, ...] = ()) -> list[Comparison]:
    """Wall time and steps until validation exact match >= ``threshold`` on the copy task.

    The quickstart config (``src/t5lab/configs/quickstart.yaml``) with ``data.task=copy``, run
    through the harness's Python API (:func:`t5lab.train.run.build_pieces`, ``make_trainer``);
    training stops at the first validation that reaches the threshold. A record, not a ratio:
    the reference column is left empty. ``repeats`` is accepted for a uniform interface.
    """
    import tempfile
    from pathlib import Path

    import lightning.pytorch as pl

    from t5lab.config import load_config
    from t5lab.train.fast import maybe_compile
    from t5lab.train.module import T5LabModule
    from t5lab.train.run import build_pieces, make_trainer, quickstart_path

    cfg = load_config(quickstart_path(), ["data.task=copy", "train.progress_bar=false", *overrides])
    pieces = build_pieces(cfg)
    found: dict[str, float] = {}

    class StopAtThreshold(pl.Callback):
        def on_fit_start(self, trainer, module) -> None:
            found["start"] = time.perf_counter()

        def on_validation_end(self, trainer, module) -> None:
            em = trainer.callback_metrics.get("val_exact_match")
            if em is not None and float(em) >= threshold and "seconds" not in found:
                found.update(seconds=time.perf_counter() - found["start"], steps=trainer.global_step,
                             exact_match=float(em))
                trainer.should_stop = True

    module = T5LabModule(pieces.model, cfg, pieces.formulation.kind, tokenizer=pieces.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(cfg, Path(tmp), progress=False)
        trainer.callbacks.append(StopAtThreshold())
        trainer.fit(maybe_compile(module, cfg.train.compile, cfg.trainer.accelerator), datamodule=pieces.datamodule)
        if "seconds" not in found:  # the final weights, as `t5lab train` validates them
            trainer.validate(module, datamodule=pieces.datamodule, verbose=False)
        total = time.perf_counter() - found["start"]
    reached = "seconds" in found
    return [Comparison(
        "copy_time", "quickstart+copy", "-", "s to val EM>=0.99", found.get("seconds"), None,
        "record", higher_is_better=False,
        extra={"reached": reached, "steps": found.get("steps"), "exact_match": found.get("exact_match"),
               "max_steps": cfg.train.max_steps, "batch_size": cfg.train.batch_size,
               "seconds_total": total, "overrides": list(overrides)},
    )]


# ---------------------------------------------------------------------------------------------
# 7. interpretability hooks: a forward inside an empty hooks() block vs the model as it is


def hooks_overhead(shape: str = "small", batch: int = 8, src_len: int = 64, tgt_len: int = 64, repeats: int = 5,
                   variants=("hf_t5", "pseudo_dec", "decoder_only")) -> list[Comparison]:
    """Hook points cost nothing while off (issue 15): the same model's forward with and without an
    empty ``t5lab.explore.hooks.hooks(model, {})`` block around it, timed in the same rounds."""
    from t5lab.explore.hooks import hooks

    rows = []
    for variant in variants:
        model = build_lm(variant, shape).eval()
        inputs = lm_batch(variant, model.config.vocab_size, batch, src_len, tgt_len)

        def plain(model=model, inputs=inputs):
            with torch.inference_mode():
                return model(**inputs)

        def hooked(model=model, inputs=inputs):
            with torch.inference_mode(), hooks(model, {}):
                return model(**inputs)

        m = interleaved({"plain": plain, "empty_hooks": hooked}, 1, "forwards", repeats=repeats)
        rows.append(Comparison(
            "hooks", f"{variant}+empty_hooks", variant, "forward ms", 1e3 * m["empty_hooks"].median_s,
            1e3 * m["plain"].median_s, "<= 1.02x", higher_is_better=False,
            extra={"shape": shape, "batch": batch, "src_len": src_len, "tgt_len": tgt_len},
        ))
    return rows


# ---------------------------------------------------------------------------------------------
# 8. time to each recipe's target: the harness vs a plain PyTorch loop (t5lab.bench.tta)

from t5lab.bench.tta import time_to_accuracy  # noqa: E402

CASES: dict[str, Callable[..., list[Comparison]]] = {
    "lm_training": lm_training,
    "enct5": enct5_vs_t5_classification,
    "fast_path": fast_path,
    "generation": generation,
    "overhead": overhead,
    "copy_time": copy_time,
    "hooks": hooks_overhead,
    "time_to_accuracy": time_to_accuracy,
}

# cases that run only when named: time_to_accuracy trains every recipe to its target (up to
# 2 x time_cap_s per task x variant), far longer than the others together
OPT_IN = frozenset({"time_to_accuracy"})
