"""sample(): greedy == hand-written argmax loop without cache, top-k=1 == greedy, beams, batching."""

from __future__ import annotations

import pytest
import torch

import t5lab
from t5lab.errors import T5LabError
from t5lab.explore._common import SEQ2SEQ, is_prefix_lm, model_kind
from t5lab.explore.generation import encode_prompts, generation_config
from tests.explore.conftest import byte_tokenizer, tiny_gpt2, tiny_t5

PROMPTS = ["abc", "hello world", "xy"]  # ragged: exercises padding (left padding for causal LMs)


@torch.no_grad()
def argmax_loop(model, tokenizer, prompt: str, steps: int) -> list[int]:
    """Greedy decoding by hand, one prompt, no padding, no KV cache: the reference for generate()."""
    eos = tokenizer.eos_token_id
    if model_kind(model) == SEQ2SEQ:
        enc = tokenizer([prompt], return_tensors="pt")
        out = [model.config.decoder_start_token_id]
        for _ in range(steps):
            dec = torch.tensor([out])
            logits = model(**enc, decoder_input_ids=dec, use_cache=False).logits  # (1, S, V)
            out.append(int(logits[0, -1].argmax()))
            if out[-1] == eos:
                break
        return out[1:]
    ids = tokenizer(prompt)["input_ids"]  # `prompt </s>`: t5lab's decoder-only input/target separator
    new: list[int] = []
    for _ in range(steps):
        x = torch.tensor([ids + new])
        # a prefix LM reads the prompt bidirectionally; generated tokens stay causal
        extra = {"prefix_mask": torch.tensor([[1] * len(ids) + [0] * len(new)])} if is_prefix_lm(model) else {}
        logits = model(input_ids=x, use_cache=False, **extra).logits
        new.append(int(logits[0, -1].argmax()))
        if new[-1] == eos:
            break
    return new


def _generate_ids(model, tokenizer, prompts, steps, **kw):
    """What sample() runs: its generation config and its encoded (left-padded for causal) prompts."""
    config = generation_config(model, tokenizer, steps, **kw)
    enc = encode_prompts(model, tokenizer, prompts)
    out = model.generate(**enc, generation_config=config)
    return out[:, 1:] if model_kind(model) == SEQ2SEQ else out[:, enc["input_ids"].shape[1]:]


def _strip(ids: list[int], tokenizer) -> list[int]:
    """Generated ids up to and including the first </s> (generate pads finished rows after it)."""
    ids = list(ids)
    return ids[: ids.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in ids else ids


def test_greedy_equals_hand_argmax_loop_batched(lm):
    name, model = lm
    tokenizer = byte_tokenizer()
    steps = 4
    batched = _generate_ids(model, tokenizer, PROMPTS, steps, temperature=0)
    for i, prompt in enumerate(PROMPTS):
        ref = argmax_loop(model, tokenizer, prompt, steps)
        got = _strip(batched[i].tolist(), tokenizer)
        assert got == ref, f"{name}: prompt {prompt!r}"
    texts = t5lab.sample(model, tokenizer, PROMPTS, max_new_tokens=steps, temperature=0)
    refs = [tokenizer.decode(argmax_loop(model, tokenizer, p, steps), skip_special_tokens=True) for p in PROMPTS]
    assert texts == refs


def test_beam_one_and_top_k_one_equal_greedy(lm):
    _, model = lm
    tokenizer = byte_tokenizer()
    greedy = t5lab.sample(model, tokenizer, PROMPTS, max_new_tokens=5, temperature=0)
    assert t5lab.sample(model, tokenizer, PROMPTS, max_new_tokens=5, temperature=0, num_beams=1) == greedy
    # sampling with only the top token left is greedy, whatever the seed and temperature
    for seed in (0, 1):
        top1 = t5lab.sample(model, tokenizer, PROMPTS, max_new_tokens=5, temperature=1.7, top_k=1, seed=seed)
        assert top1 == greedy


def test_beam_search_finds_the_exhaustive_best_two_token_sequence():
    """With as many beams as tokens and 2 steps, beam search is exhaustive; check against brute force."""
    model, tokenizer = tiny_t5(), byte_tokenizer()
    V = model.config.vocab_size
    enc = tokenizer(["ab"], return_tensors="pt")
    with torch.no_grad():
        start = torch.tensor([[model.config.decoder_start_token_id]])
        lp1 = model(**enc, decoder_input_ids=start).logits[0, -1].log_softmax(-1)  # (V,)
        firsts = torch.arange(V)[:, None]
        dec = torch.cat([start.expand(V, 1), firsts], dim=1)  # (V, 2)
        lp2 = model(input_ids=enc["input_ids"].expand(V, -1), decoder_input_ids=dec).logits[:, -1].log_softmax(-1)
    total = lp1[:, None] + lp2  # (V, V): log p(a) + log p(b | a)
    total[tokenizer.eos_token_id] = -float("inf")  # after </s> the sequence is over...
    best_pair = divmod(int(total.argmax()), V)
    candidates = {best_pair: float(total.max()), (tokenizer.eos_token_id,): float(lp1[tokenizer.eos_token_id])}
    expected = max(candidates, key=candidates.get)
    ids = _generate_ids(model, tokenizer, ["ab"], 2, temperature=0, num_beams=V, length_penalty=0.0)
    assert tuple(_strip(ids[0].tolist(), tokenizer)) == expected


def test_num_return_sequences_shape_and_seeded_sampling_is_reproducible(t5_model, tokenizer):
    out = t5lab.sample(t5_model, tokenizer, PROMPTS, max_new_tokens=4, num_beams=3, num_return_sequences=3, temperature=0)
    assert len(out) == 3 and all(len(o) == 3 for o in out)
    one = t5lab.sample(t5_model, tokenizer, "abc", max_new_tokens=4, temperature=1.0, top_p=0.9, seed=3)
    assert isinstance(one, str)
    assert one == t5lab.sample(t5_model, tokenizer, "abc", max_new_tokens=4, temperature=1.0, top_p=0.9, seed=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_new_tokens=0), "at least 1"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=1.5), "top_p"),
        (dict(temperature=0, num_beams=1, num_return_sequences=2), "num_return_sequences"),
    ],
)
def test_bad_sampling_arguments_are_clear_errors(t5_model, tokenizer, kwargs, message):
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(T5LabError, match=message):
        t5lab.sample(t5_model, tokenizer, "abc", **kwargs)


def test_prompt_longer_than_context_is_an_error(tokenizer):
    model = tiny_gpt2()  # n_positions = 64
    with pytest.raises(T5LabError, match="longer than the model's context of 64"):
        t5lab.sample(model, tokenizer, "x" * 70, max_new_tokens=2)
