"""T5-base pre-training throughput and MFU on one CUDA GPU, at nanoT5's setting.

nanoT5 (Nawrot 2023, arXiv:2309.02373; github.com/PiotrNawrot/nanoT5) pre-trains T5-base v1.1
(d_model 768, 12+12 layers, 12 heads, d_ff 2048, gated-GELU, vocab 32128) on C4 span corruption
with 512 input tokens (114 target tokens at 15% noise, mean span 3) and reports ~0.56 s per step of
batch 256 on one A100 with bf16 + torch.compile. This script times the same shapes with random
tokens through transformers' ``T5ForConditionalGeneration`` (bf16 autocast, ``torch.compile``,
fused AdamW, flex attention carrying T5's relative position bias as a score modifier) and reports
seconds per step, tokens/s and model FLOP utilisation (MFU) against the bf16 matmul rate measured
on the same GPU in the same run.

Run on a CUDA machine::

    python bench/gpu_t5_base.py                       # batch 256 x 512, micro-batch 32, 10 steps
    python bench/gpu_t5_base.py --attn sdpa --no-compile

CPU smoke test (what tests/bench/test_gpu_script.py runs)::

    python bench/gpu_t5_base.py --steps 1 --batch 2 --seq 32 --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time

import torch
from transformers import T5Config, T5ForConditionalGeneration

from t5lab.bench.cases import t5_train_flops
from t5lab.fileio import atomic_write_text

NANOT5_A100_S_PER_STEP = 0.56  # nanoT5 README: batch 256 x 512, bf16 + compile, one A100 40GB

T5_BASE_V1_1 = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12,
                    num_heads=12, feed_forward_proj="gated-gelu", dropout_rate=0.0, decoder_start_token_id=0,
                    pad_token_id=0, eos_token_id=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3 on CUDA, 0 on CPU)")
    p.add_argument("--batch", type=int, default=256, help="sequences per optimizer step")
    p.add_argument("--micro-batch", type=int, default=32, help="sequences per forward/backward (gradient accumulation)")
    p.add_argument("--seq", type=int, default=512, help="encoder input tokens")
    p.add_argument("--target-len", type=int, default=None, help="decoder tokens (default: nanoT5's 114 for 512 inputs)")
    p.add_argument("--num-layers", type=int, default=None, help="override encoder and decoder depth (smoke tests)")
    p.add_argument("--attn", default="auto", choices=["auto", "flex_attention", "sdpa", "eager"],
                   help="attention kernel (auto: flex_attention on CUDA, sdpa on CPU)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 autocast on CUDA with bf16, fp32 otherwise")
    p.add_argument("--no-compile", action="store_true", help="eager mode (default compiles on CUDA)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    for name in ("steps", "batch", "micro_batch", "seq"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def t5_flex_attention(module, query, key, value, attention_mask, position_bias=None, **kwargs):
    """transformers' flex attention with T5's position bias expanded to the batch (a view, no copy).

    Why: transformers' flex ``score_mod`` reads ``position_bias[batch_idx, head, q, kv]``, but T5
    computes its relative bias (and the zero bias of cross-attention) once for the whole batch,
    shape ``(1, H, Q, K)``; for batch > 1 the kernel indexes out of bounds (on CPU: "index out of
    bounds: 0 <= tmp8 < 1L" from the compiled kernel, transformers 5.23 / torch 2.13; on CUDA an
    out-of-bounds read). t5lab's own core expands its folded bias the same way
    (``t5lab.models.t5core``, flex path).
    """
    from transformers.integrations.flex_attention import flex_attention_forward

    if position_bias is not None and position_bias.shape[0] != query.shape[0]:
        position_bias = position_bias.expand(query.shape[0], -1, -1, -1)  # (B, H, Q, K) view
    return flex_attention_forward(module, query, key, value, attention_mask, position_bias=position_bias, **kwargs)


def use_t5_flex_attention() -> None:
    """Route ``attn_implementation="flex_attention"`` through :func:`t5_flex_attention` (this process)."""
    from transformers import AttentionInterface

    AttentionInterface.register("flex_attention", t5_flex_attention)


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int, repeats: int = 5) -> float:
    """Dense matmul FLOP/s for ``dtype`` on ``device`` (best of ``repeats``): the MFU denominator."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * n**3 / best


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    if args.device not in ("auto", "cpu") and not cuda:
        sys.exit(f"--device {args.device}: only cuda or cpu are supported")
    if cuda and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU here; run with --device cpu for a smoke test")
    bf16 = args.precision == "bf16" or (args.precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    compile_ = cuda and not args.no_compile
    attn = args.attn if args.attn != "auto" else ("flex_attention" if cuda else "sdpa")
    target_len = args.target_len or max(2, round(args.seq * 114 / 512))
    micro = min(args.micro_batch, args.batch)
    if args.batch % micro:
        sys.exit(f"--batch {args.batch} must be a multiple of --micro-batch {micro}")
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 0)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 runs use TF32 tensor cores, as nanoT5 does
        torch.backends.cudnn.allow_tf32 = True

    shape = dict(T5_BASE_V1_1)
    if args.num_layers:
        shape.update(num_layers=args.num_layers, num_decoder_layers=args.num_layers)
    config = T5Config(**shape)
    if attn == "flex_attention":
        use_t5_flex_attention()
    config._attn_implementation = attn
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config).to(device).train()
    step_model = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, config.vocab_size, (micro, args.seq), generator=g).to(device)  # (b, S)
    tgt = torch.randint(3, config.vocab_size, (micro, target_len), generator=g).to(device)  # (b, T)
    batch = dict(input_ids=src, attention_mask=torch.ones_like(src), labels=tgt)
    accum = args.batch // micro
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext())
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step() -> float:
        for _ in range(accum):
            with autocast:
                loss = step_model(**batch).loss / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach()) * accum  # one host sync per step, like a logger would do

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - start
    times, losses = [], []
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        losses.append(step())
        sync()
        times.append(time.perf_counter() - t0)
    if not all(math.isfinite(x) for x in losses):
        sys.exit(f"non-finite loss during the benchmark: {losses}")

    s_per_step = statistics.median(times)
    flops = t5_train_flops(config, args.batch, args.seq, target_len)
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = matmul_rate(dtype, device, 8192 if cuda else 512)
    result = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": args.batch, "micro_batch": micro, "seq": args.seq, "target_len": target_len,
        "num_layers": config.num_layers, "attn": attn, "bf16": bf16, "compile": compile_, "fused_adamw": True,
        "steps": args.steps, "warmup_steps": warmup, "warmup_s": warmup_s,
        "s_per_step": s_per_step, "s_per_step_all": times,
        "tokens_per_s": args.batch * (args.seq + target_len) / s_per_step,
        "model_tflops_per_step": flops / 1e12,
        "achieved_tflops": flops / s_per_step / 1e12,
        "matmul_peak_tflops": peak / 1e12,
        "mfu": flops / s_per_step / peak,
        "nanot5_a100_s_per_step": NANOT5_A100_S_PER_STEP,
        "loss": losses[-1],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "s_per_step_all"}, indent=1))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
