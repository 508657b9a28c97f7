"""Training steps of the quickstart model alone vs with greedy decoding in a background thread.

Measures whether validation decoding could run concurrently with training on this machine
(docs/harness.md, "Time to accuracy"): the step time alone and with a thread decoding a frozen
copy of the weights, and one 200-example decode alone and alongside training. One torch thread
each (``OMP_NUM_THREADS=1``). Run: ``OMP_NUM_THREADS=1 python scripts/decode_contention.py``.
"""

from __future__ import annotations

import copy
import os
import statistics
import threading
import time

import torch
from transformers import T5Config, T5ForConditionalGeneration

torch.set_num_threads(1)
torch.manual_seed(0)
# the quickstart's model (src/t5lab/configs/quickstart.yaml), its batch and validation sizes
model = T5ForConditionalGeneration(T5Config(
    vocab_size=16, d_model=64, d_ff=256, d_kv=16, num_heads=4, num_layers=2, dropout_rate=0.0,
    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randint(2, 16, (64, 9)), torch.randint(2, 16, (64, 9))
prompts = torch.randint(2, 16, (200, 9))
frozen = copy.deepcopy(model).eval()  # the snapshot an async validation would decode with


def steps(n: int) -> float:
    """Seconds per training step, over n steps."""
    t = time.perf_counter()
    for _ in range(n):
        model(input_ids=x, labels=y).loss.backward()
        opt.step()
        opt.zero_grad()
    return (time.perf_counter() - t) / n


def decode() -> float:
    """Seconds for one greedy decode of the 200 prompts, 9 new tokens each."""
    t = time.perf_counter()
    with torch.no_grad():
        frozen.generate(input_ids=prompts, max_new_tokens=9, min_new_tokens=9, do_sample=False, num_beams=1)
    return time.perf_counter() - t


def _decode_until(stop: threading.Event, times: list[float]) -> None:
    torch.set_num_threads(1)
    while not stop.is_set():
        times.append(decode())


def main() -> None:
    steps(5)
    decode()  # warm-up
    alone, together, decode_alone, decode_together = [], [], [], []
    for _ in range(3):  # interleaved rounds: a change of machine load hits both
        alone.append(steps(40))
        decode_alone.append(decode())
        stop, times = threading.Event(), []

        thread = threading.Thread(target=_decode_until, args=(stop, times))
        thread.start()
        together.append(steps(40))
        stop.set()
        thread.join()
        decode_together += times
    ms = lambda v: statistics.median(v) * 1e3  # noqa: E731
    print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    print(f"training step: alone {ms(alone):.1f} ms, with a decoding thread {ms(together):.1f} ms")
    print(f"200-example decode: alone {ms(decode_alone):.0f} ms, alongside training {ms(decode_together):.0f} ms")


if __name__ == "__main__":
    main()
