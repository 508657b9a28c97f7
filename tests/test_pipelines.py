"""t5lab.pipeline: every task on tiny T5, pseudo-decoder, decoder-only (causal and prefix LM), GPT-2, EncT5."""

from __future__ import annotations

import pytest
import torch

import t5lab
from t5lab.errors import T5LabError
from t5lab.pipelines import GenerativeClassificationPipeline, Text2TextPipeline
from tests.explore.conftest import LM_FACTORIES, T5_KW, byte_tokenizer

GENERATIVE = ["t5", "pseudo_dec", "decoder_only", "prefix_lm"]
INPUTS = ["hello", "abc", "the fox"]


@pytest.mark.parametrize("variant", GENERATIVE)
@pytest.mark.parametrize(
    "task, key, prefix",
    [
        ("text2text-generation", "generated_text", ""),
        ("summarization", "summary_text", "summarize: "),
        ("translation_en_to_fr", "translation_text", "translate English to French: "),
    ],
)
def test_seq2seq_tasks_apply_the_prefix_and_batch(variant, task, key, prefix):
    model, tokenizer = LM_FACTORIES[variant](), byte_tokenizer()
    pipe = t5lab.pipeline(task, model=model, tokenizer=tokenizer, batch_size=2, max_new_tokens=4)
    assert isinstance(pipe, Text2TextPipeline) and pipe.prefix == prefix
    out = pipe(INPUTS)  # batches of 2 + 1
    expected = t5lab.sample(model, tokenizer, [prefix + t for t in INPUTS], max_new_tokens=4, temperature=0)
    assert out == [{key: e} for e in expected]
    assert pipe(INPUTS[1]) == [{key: expected[1]}]  # one input, unbatched, same result


def test_prefix_and_generation_defaults_come_from_task_specific_params():
    model, tokenizer = LM_FACTORIES["t5"](), byte_tokenizer()
    model.config.task_specific_params = {
        "translation_en_to_de": {"prefix": "translate English to German: ", "max_length": 3, "num_beams": 2}
    }
    pipe = t5lab.pipeline("translation_en_to_de", model=model, tokenizer=tokenizer)
    assert pipe.prefix == "translate English to German: "
    assert pipe.generate_kwargs["max_new_tokens"] == 3 and pipe.generate_kwargs["num_beams"] == 2
    expected = t5lab.sample(model, tokenizer, "translate English to German: hi", max_new_tokens=3, num_beams=2, temperature=0)
    assert pipe("hi") == [{"translation_text": expected}]
    # call-time arguments win over the defaults
    assert pipe("hi", max_new_tokens=1)[0]["translation_text"] == t5lab.sample(
        model, tokenizer, "translate English to German: hi", max_new_tokens=1, num_beams=2, temperature=0
    )


def test_text_generation_uses_transformers_pipeline_for_causal_lms():
    import transformers

    for variant in ["decoder_only", "gpt2"]:
        model, tokenizer = LM_FACTORIES[variant](), byte_tokenizer()
        pipe = t5lab.pipeline("text-generation", model=model, tokenizer=tokenizer, max_new_tokens=4, do_sample=False)
        assert isinstance(pipe, transformers.TextGenerationPipeline)
        text = pipe("hello")[0]["generated_text"]
        # transformers tokenizes with the tokenizer's defaults: `hello </s>`, the same prompt as
        # t5lab.sample (checked against a hand-written argmax loop in tests/explore)
        assert text == "hello" + t5lab.sample(model, tokenizer, "hello", max_new_tokens=4, temperature=0)
        assert pipe(["ab", "cde"]) == [[{"generated_text": p + s}] for p, s in zip(["ab", "cde"], t5lab.sample(model, tokenizer, ["ab", "cde"], max_new_tokens=4, temperature=0))]


@pytest.mark.parametrize("variant", ["t5", "pseudo_dec", "prefix_lm"])
def test_text_generation_for_seq2seq_and_prefix_lms_is_ours(variant):
    model, tokenizer = LM_FACTORIES[variant](), byte_tokenizer()
    pipe = t5lab.pipeline("text-generation", model=model, tokenizer=tokenizer, max_new_tokens=3)
    assert isinstance(pipe, Text2TextPipeline)
    assert pipe(["ab", "cd"]) == [{"generated_text": t} for t in t5lab.sample(model, tokenizer, ["ab", "cd"], max_new_tokens=3, temperature=0)]


def test_text_classification_with_enct5_uses_transformers_pipeline():
    import transformers

    from tests.explore.conftest import _variant

    model = _variant("enct5", "EncT5Config", "EncT5ForSequenceClassification", num_labels=3)
    tokenizer = byte_tokenizer()
    pipe = t5lab.pipeline("text-classification", model=model, tokenizer=tokenizer)
    assert isinstance(pipe, transformers.TextClassificationPipeline)
    out = pipe(["good movie", "bad"])
    with torch.no_grad():
        enc = tokenizer(["good movie", "bad"], padding=True, return_tensors="pt")
        probs = model(**enc).logits.softmax(-1)
    for row, p in zip(out, probs):
        assert row["label"] == model.config.id2label[int(p.argmax())]
        assert row["score"] == pytest.approx(float(p.max()), rel=1e-5)


@pytest.mark.parametrize("variant", ["t5", "decoder_only"])
def test_text_classification_with_an_lm_generates_the_label_and_scores_it(variant):
    model, tokenizer = LM_FACTORIES[variant](), byte_tokenizer()
    pipe = t5lab.pipeline("text-classification", model=model, tokenizer=tokenizer, max_new_tokens=3)
    assert isinstance(pipe, GenerativeClassificationPipeline)
    out = pipe(["good", "bad movie"])
    labels = t5lab.sample(model, tokenizer, ["good", "bad movie"], max_new_tokens=3, temperature=0)
    assert [o["label"] for o in out] == [label.strip() for label in labels]
    # score = probability of the greedy label tokens, recomputed by teacher forcing one input alone
    from t5lab.explore.generation import encode_prompts, generation_config

    enc = encode_prompts(model, tokenizer, ["good"])
    gen = model.generate(**enc, generation_config=generation_config(model, tokenizer, 3, temperature=0))
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            logp = model(**enc, decoder_input_ids=gen[:, :-1]).logits.log_softmax(-1)[0]  # (S, V)
            new = gen[0, 1:]
        else:
            logp = model(input_ids=gen).logits.log_softmax(-1)[0, enc["input_ids"].shape[1] - 1 : -1]
            new = gen[0, enc["input_ids"].shape[1]:]
    total = sum(float(logp[i, t]) for i, t in enumerate(new.tolist()) if t != tokenizer.pad_token_id)
    assert out[0]["score"] == pytest.approx(float(torch.tensor(total).exp()), rel=1e-4)


def test_pipeline_errors():
    model, tokenizer = LM_FACTORIES["t5"](), byte_tokenizer()
    with pytest.raises(T5LabError, match="unknown pipeline task 'fill-mask'"):
        t5lab.pipeline("fill-mask", model=model, tokenizer=tokenizer)
    with pytest.raises(T5LabError, match="needs model="):
        t5lab.pipeline("summarization")
    with pytest.raises(T5LabError, match="needs tokenizer="):
        t5lab.pipeline("summarization", model=model)
    assert T5_KW["d_model"] <= 64
