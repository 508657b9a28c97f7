"""The shared model battery: transformers' common model contracts, run over every registered variant.

The cases come from the registry (``tests.models.helpers.battery_cases``): each variant, in each
mode its options select (decoder_only as a prefix LM), and the value-head model of each LM, so a
variant registered later is tested without new test code. Each check compares the model with itself
another way (saved and reloaded, tuple vs dict, cached vs uncached, batched vs one by one, eager vs
sdpa, compiled / exported vs eager, offloaded vs in memory); a check is skipped only where it cannot
apply, with the reason. Tiny models on CPU; the tracing and offload checks are marked ``slow``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import t5lab  # noqa: F401  (registers the t5lab model types with the Auto classes)
from tests.models.helpers import (
    VOCAB,
    Case,
    battery_cases,
    checkpointing_on,
    enable_checkpointing,
    no_deprecation_warnings,
)

CASES = battery_cases()

# Known defects, each with its owner and fix: a strict xfail, so the entry fails (XPASS) the day the
# defect is fixed and must be removed here then. Keys: test ids, ``check[case id(-parameter)]``.
KNOWN_FAILURES: dict[str, str] = {}


@pytest.fixture(params=CASES, ids=lambda c: c.id)
def case(request) -> Case:
    reason = KNOWN_FAILURES.get(request.node.name)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    return request.param


# ---------------------------------------------------------------------------------------------
# Inputs and outputs
# ---------------------------------------------------------------------------------------------


def make_batch(case: Case, labels: bool = True) -> dict[str, torch.Tensor]:
    """Two rows, the second padded (so masks matter), with labels of the variant's kind."""
    g = torch.Generator().manual_seed(123)
    input_ids = torch.randint(2, VOCAB, (2, 7), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    input_ids[1, 5:] = 0
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if case.kind == "seq2seq":
        target = torch.randint(2, VOCAB, (2, 5), generator=g)
        target[1, 4:] = -100
    elif case.kind == "causal":
        target = input_ids.masked_fill(attention_mask == 0, -100)
        if case.prefix_lm:
            prefix_mask = torch.zeros_like(input_ids)
            prefix_mask[:, :3] = 1
            batch["prefix_mask"] = prefix_mask
            target[:, :3] = -100  # no loss on the prefix
    else:
        target = torch.tensor([0, 2])
    if labels:
        batch["labels"] = target
    return batch


def prompts(case: Case) -> dict[str, torch.Tensor]:
    """Two left-padded prompts (the first is 2 tokens shorter)."""
    g = torch.Generator().manual_seed(321)
    input_ids = torch.randint(2, VOCAB, (2, 6), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :2] = 0
    input_ids[0, :2] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def main_outputs(out: Any) -> dict[str, torch.Tensor]:
    """The tensors a check compares: logits, loss and the value head's value when present."""
    return {k: getattr(out, k) for k in ("logits", "loss", "value") if getattr(out, k, None) is not None}


def assert_same_outputs(a: Any, b: Any, **tolerances: Any) -> None:
    ours, theirs = main_outputs(a), main_outputs(b)
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], msg=key, **tolerances)


def skip_unless_generates(case: Case) -> None:
    if case.kind == "classifier":
        pytest.skip(f"{case.id} is a classifier: it has no generate()")


GEN = dict(max_new_tokens=4, min_new_tokens=4, pad_token_id=0)  # fixed length: EOS never ends a row early


def new_tokens(case: Case, generated: torch.Tensor, prompt_width: int) -> torch.Tensor:
    """The generated continuation: a causal LM returns prompt + new tokens, a seq2seq one the decoder's."""
    sequences = generated.sequences if hasattr(generated, "sequences") else generated
    return sequences[:, prompt_width:] if case.kind == "causal" else sequences


# ---------------------------------------------------------------------------------------------
# Saving, outputs, training features
# ---------------------------------------------------------------------------------------------


def test_save_load_through_auto_class(case, tmp_path):
    model = case.build()
    model.save_pretrained(tmp_path)
    loaded = case.auto_class().from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    batch = make_batch(case)
    with torch.no_grad():
        assert_same_outputs(loaded(**batch), model(**batch))


def test_return_dict_false_gives_the_dict_as_a_tuple(case):
    model = case.build()
    batch = make_batch(case)
    with torch.no_grad():
        as_dict = model(**batch)
        as_tuple = model(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected)
    for got, want in zip(as_tuple, expected):
        if isinstance(want, torch.Tensor):
            torch.testing.assert_close(got, want)


def test_attentions_and_hidden_states_with_transformers_names(case):
    model = case.build()
    model.set_attn_implementation("eager")
    batch = make_batch(case)
    with torch.no_grad():
        out = model(**batch, output_attentions=True, output_hidden_states=True)
    layers = model.config.num_layers if hasattr(model.config, "num_layers") else model.config.n_layer
    heads = model.config.num_attention_heads
    if case.kind == "causal":
        assert len(out.attentions) == layers and len(out.hidden_states) == layers + 1
        assert out.attentions[0].shape == (2, heads, 7, 7)
        assert out.hidden_states[-1].shape[:2] == (2, 7)
        return
    # encoder-decoders: transformers' names, encoder_* / decoder_* / cross_attentions
    assert not hasattr(out, "attentions") and not hasattr(out, "hidden_states")
    # (pseudo_dec's pseudo encoder is an embedding without attention layers: no encoder attentions)
    assert out.encoder_attentions is not None and out.encoder_hidden_states is not None
    assert len(out.encoder_hidden_states) == len(out.encoder_attentions) + 1
    assert len(out.encoder_attentions) == len(getattr(model.get_encoder(), "block", ()))  # one per T5 block
    assert all(a.shape == (2, heads, 7, 7) for a in out.encoder_attentions)
    assert len(out.decoder_attentions) >= 1 and len(out.cross_attentions) == len(out.decoder_attentions)
    assert len(out.decoder_hidden_states) == len(out.decoder_attentions) + 1
    queries = out.decoder_attentions[0].shape[-1]
    assert out.cross_attentions[0].shape == (2, heads, queries, 7)
    # transformers' convention: the last hidden state is the stack's output (after its final norm)
    torch.testing.assert_close(out.encoder_hidden_states[-1], out.encoder_last_hidden_state)


def _grads(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    model.train()
    out = model(**batch)
    loss = out.loss + (out.value.pow(2).mean() if getattr(out, "value", None) is not None else 0.0)
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(case):
    batch = make_batch(case)
    reference = _grads(case.build(), batch)
    model = case.build()
    enable_checkpointing(model)
    assert checkpointing_on(model)
    checkpointed = _grads(model, batch)
    assert checkpointed.keys() == reference.keys() and len(reference) > 5
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], msg=name)


def test_legacy_gradient_checkpointing_config_flag(case):
    """Old configs carry ``gradient_checkpointing=True``: the model builds, trains, and matches."""
    batch = make_batch(case)
    model = case.build()
    reference = _grads(copy.deepcopy(model), batch)
    config = type(model.config).from_dict({**model.config.to_dict(), "gradient_checkpointing": True})
    torch.manual_seed(0)
    legacy = type(model)(config)
    assert checkpointing_on(legacy)  # transformers turns the legacy flag into checkpointing
    legacy.load_state_dict(model.state_dict())
    grads = _grads(legacy, batch)
    assert grads.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(grads[name], reference[name], msg=name)


def test_resize_token_embeddings(case):
    model = case.build()
    batch = make_batch(case)
    with torch.no_grad():
        before = model(**batch)
    model.resize_token_embeddings(VOCAB + 8)
    assert model.get_input_embeddings().num_embeddings == VOCAB + 8
    assert model.config.vocab_size == VOCAB + 8
    with torch.no_grad():
        after = model(**batch)
    if case.kind == "classifier":
        torch.testing.assert_close(after.logits, before.logits)  # old tokens keep their embeddings
        return
    assert model.get_output_embeddings().weight.shape[0] == VOCAB + 8
    assert after.logits.shape[-1] == VOCAB + 8
    torch.testing.assert_close(after.logits[..., :VOCAB], before.logits)
    if getattr(model.config, "tie_word_embeddings", False):
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_inputs_embeds_equal_input_ids(case):
    model = case.build()
    batch = make_batch(case)
    embed = model.get_input_embeddings()
    with_embeds = {k: v for k, v in batch.items() if k != "input_ids"}
    with_embeds["inputs_embeds"] = embed(batch["input_ids"])
    if case.kind == "seq2seq":
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        batch = {**batch, "decoder_input_ids": decoder_ids}
        with_embeds["decoder_inputs_embeds"] = embed(decoder_ids)
    with torch.no_grad():
        assert_same_outputs(model(**with_embeds), model(**batch))


def test_shift_labels_take_precedence_over_labels(case):
    """transformers' loss convention: ``shift_labels`` (already aligned with the logits) is the
    target when given; here it also ignores one more token, so it cannot pass by shifting ``labels``."""
    if case.kind != "causal":
        pytest.skip(f"{case.id} is not a causal LM: shift_labels is the causal-LM loss convention")
    model = case.build()
    batch = make_batch(case)
    labels = batch.pop("labels")
    fewer = labels.clone()
    fewer[:, 4] = -100
    shifted = torch.cat([fewer[:, 1:], torch.full_like(fewer[:, :1], -100)], dim=1)  # (B, T)
    with torch.no_grad():
        expected = model(**batch, labels=fewer).loss
        got = model(**batch, labels=labels, shift_labels=shifted).loss
        unchanged = model(**batch, labels=labels).loss
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, unchanged)


def test_eager_equals_sdpa(case):
    model = case.build()
    batch = make_batch(case)
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        sdpa = model(**batch)
        model.set_attn_implementation("eager")
        eager = model(**batch)
    assert_same_outputs(eager, sdpa, rtol=1e-5, atol=1e-5)


def test_from_config_in_bf16_keeps_fp32_strict_modules_in_fp32(case):
    model = case.build()
    strict = set(type(model)._keep_in_fp32_modules_strict or ())
    if not strict:
        pytest.skip(f"{type(model).__name__} declares no fp32-strict modules")
    half = type(model)._from_config(copy.deepcopy(model.config), dtype=torch.bfloat16)
    kept = {n: p.dtype for n, p in half.named_parameters() if set(n.split(".")) & strict}
    assert kept and set(kept.values()) == {torch.float32}, kept
    assert half.get_input_embeddings().weight.dtype == torch.bfloat16
    with torch.no_grad():
        out = half(**make_batch(case))
    if getattr(out, "value", None) is not None:
        assert out.value.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_from_pretrained_in_half_precision_keeps_fp32_modules(case, tmp_path, dtype):
    """Loading with ``dtype=`` keeps ``_keep_in_fp32_modules`` (fp16 only: T5's ``wo`` overflows
    fp16) and ``_keep_in_fp32_modules_strict`` (fp16 and bf16: the value head) in float32."""
    model = case.build()
    kept = set(type(model)._keep_in_fp32_modules_strict or ())
    if dtype == torch.float16:
        kept |= set(type(model)._keep_in_fp32_modules or ())
    if not kept:
        pytest.skip(f"{type(model).__name__} keeps no module in fp32 under {dtype}")
    model.save_pretrained(tmp_path)
    half = case.auto_class().from_pretrained(tmp_path, dtype=dtype)
    dtypes = {n: p.dtype for n, p in half.named_parameters() if set(n.split(".")) & kept}
    assert dtypes and set(dtypes.values()) == {torch.float32}, dtypes
    assert half.get_input_embeddings().weight.dtype == dtype


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def test_cache_under_either_name_without_deprecation_warnings(case):
    """A second step fed the first step's cache as ``cache=`` or ``past_key_values=`` gives the
    logits of a full forward, and no FutureWarning/DeprecationWarning (transformers 5.24 renamed it)."""
    skip_unless_generates(case)
    from t5lab.models.t5core import CACHE_FIELD

    model = case.build()
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(2, VOCAB, (2, 6), generator=g)
    if case.kind == "seq2seq":
        full_kwargs = {"input_ids": ids, "decoder_input_ids": ids[:, :4]}
        first = {"input_ids": ids, "decoder_input_ids": ids[:, :3]}
        second = {"input_ids": ids, "decoder_input_ids": ids[:, 3:4]}
    else:
        full_kwargs = {"input_ids": ids}
        first = {"input_ids": ids[:, :5]}
        second = {"input_ids": ids[:, 5:]}
    # transformers' own classes (t5, gpt2) deprecate past_key_values themselves: only `cache` there
    names = ("cache",) if type(model).__module__.startswith("transformers.") else ("cache", "past_key_values")
    if CACHE_FIELD == "past_key_values":
        names = ("past_key_values",) if type(model).__module__.startswith("transformers.") else names
    with torch.no_grad():
        full = model(**full_kwargs, use_cache=False).logits[:, -1]
        for name in names:
            with no_deprecation_warnings():
                out = model(**first, use_cache=True)
                step = model(**second, use_cache=True, **{name: getattr(out, CACHE_FIELD)})
            torch.testing.assert_close(step.logits[:, -1], full, msg=name)


def test_generate_greedy_cached_equals_uncached(case):
    skip_unless_generates(case)
    model = case.build()
    batch = prompts(case)
    with torch.no_grad(), no_deprecation_warnings():
        cached = model.generate(**batch, do_sample=False, use_cache=True, **GEN)
        uncached = model.generate(**batch, do_sample=False, use_cache=False, **GEN)
    torch.testing.assert_close(cached, uncached)
    assert new_tokens(case, cached, batch["input_ids"].shape[1]).shape[1] >= GEN["max_new_tokens"]


def test_generate_left_padded_batch_equals_one_by_one(case):
    skip_unless_generates(case)
    model = case.build()
    batch = prompts(case)
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        together = new_tokens(case, model.generate(**batch, do_sample=False, **GEN), width)
        for row in range(2):
            keep = batch["attention_mask"][row].bool()
            single = {k: v[row : row + 1, keep] for k, v in batch.items()}
            alone = new_tokens(case, model.generate(**single, do_sample=False, **GEN), int(keep.sum()))
            torch.testing.assert_close(together[row : row + 1], alone, msg=f"row {row}")


def test_generate_sample_is_seeded_and_beam_search_runs(case):
    skip_unless_generates(case)
    model = case.build()
    batch = prompts(case)
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        torch.manual_seed(3)
        first = model.generate(**batch, do_sample=True, top_k=0, **GEN)
        torch.manual_seed(3)
        again = model.generate(**batch, do_sample=True, top_k=0, **GEN)
        beams = model.generate(**batch, do_sample=False, num_beams=3, num_return_sequences=2, **GEN)
    torch.testing.assert_close(first, again)
    assert new_tokens(case, beams, width).shape[0] == 4
    # the best beam scores at least as high as greedy's sequence under the model
    with torch.no_grad():
        greedy = model.generate(**batch, do_sample=False, num_beams=1, **GEN)
        best = model.generate(**batch, do_sample=False, num_beams=3, **GEN)
    assert _sequence_logprob(case, model, batch, best).ge(_sequence_logprob(case, model, batch, greedy) - 1e-4).all()


def _sequence_logprob(case: Case, model: Any, batch: dict[str, torch.Tensor], generated: torch.Tensor) -> torch.Tensor:
    """Sum of log-probabilities of the generated tokens, one teacher-forced pass."""
    width = batch["input_ids"].shape[1]
    with torch.no_grad():
        if case.kind == "seq2seq":
            logits = model(**batch, decoder_input_ids=generated[:, :-1]).logits
            targets = generated[:, 1:]
        else:
            mask = torch.cat([batch["attention_mask"], torch.ones_like(generated[:, width:])], dim=1)
            logits = model(input_ids=generated, attention_mask=mask).logits[:, width - 1 : -1]
            targets = generated[:, width:]
    return torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1).sum(-1)


def test_generate_dict_outputs(case):
    skip_unless_generates(case)
    model = case.build()
    batch = prompts(case)
    with torch.no_grad():
        out = model.generate(
            **batch, do_sample=False, return_dict_in_generate=True, output_scores=True, output_logits=True, **GEN
        )
        plain = model.generate(**batch, do_sample=False, **GEN)
    torch.testing.assert_close(out.sequences, plain)
    tokens = new_tokens(case, out, batch["input_ids"].shape[1])
    tokens = tokens[:, -GEN["max_new_tokens"] :]
    assert len(out.scores) == len(out.logits) == GEN["max_new_tokens"]
    chosen = torch.stack([s.argmax(-1) for s in out.scores], dim=1)  # greedy: the top score's token
    torch.testing.assert_close(chosen, tokens)


def test_generate_static_cache_equals_dynamic(case):
    skip_unless_generates(case)
    model = case.build()
    batch = prompts(case)
    with torch.no_grad():
        dynamic = model.generate(**batch, do_sample=False, **GEN)
        static = model.generate(**batch, do_sample=False, cache_implementation="static", **GEN)
    torch.testing.assert_close(static, dynamic)


def test_assisted_decoding_equals_greedy(case):
    """Greedy assisted decoding keeps exactly the target model's greedy tokens (Leviathan et al. 2023)."""
    skip_unless_generates(case)
    model = case.build()
    assistant = case.build(seed=1)  # a different draft: some candidates are rejected
    batch = {k: v[1:] for k, v in prompts(case).items()}  # assisted decoding takes one row
    with torch.no_grad():
        greedy = model.generate(**batch, do_sample=False, **GEN)
        assisted = model.generate(**batch, do_sample=False, assistant_model=assistant, **GEN)
    torch.testing.assert_close(assisted, greedy)


# ---------------------------------------------------------------------------------------------
# Tracing and offloading (slow)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torch_compile_fullgraph_forward(case):
    """Dynamo captures the whole forward in one graph (backend "eager": the capture is the check,
    Inductor's code generation would only add minutes on CPU)."""
    model = case.build()
    batch = make_batch(case)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert_same_outputs(compiled(**batch), model(**batch))


@pytest.mark.slow
def test_torch_export(case):
    model = case.build()
    batch = {**make_batch(case), "use_cache": False}  # a scoring/training forward: no cache object out
    with torch.no_grad():
        exported = torch.export.export(model, args=(), kwargs=batch, strict=False)
        assert_same_outputs(exported.module()(**batch), model(**batch))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["cpu", "disk"])
def test_device_map_reload(case, tmp_path, where):
    pytest.importorskip("accelerate", reason="device_map loading needs accelerate (pip install accelerate)")
    model = case.build()
    model.save_pretrained(tmp_path / "model")
    # disk: every weight offloaded, loaded by accelerate's hooks module by module (a split map would
    # have to keep tied embeddings together, which accelerate's offload index does not follow)
    device_map = {"": where}
    loaded = case.auto_class().from_pretrained(
        tmp_path / "model", device_map=device_map, offload_folder=str(tmp_path / "offload")
    ).eval()
    if where == "disk":
        assert any(p.device.type == "meta" for p in loaded.parameters()), "nothing was offloaded"
    batch = make_batch(case)
    with torch.no_grad():
        assert_same_outputs(loaded(**batch), model(**batch))
