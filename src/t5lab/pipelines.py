"""Task pipelines for every t5lab variant, restoring what transformers 5 removed.

transformers 5 dropped the ``text2text-generation``, ``summarization`` and ``translation``
pipelines; it keeps ``text-generation`` (causal LMs) and ``text-classification``. ``pipeline``
here returns:

- ``text2text-generation`` / ``summarization`` / ``translation_xx_to_yy``: our
  :class:`Text2TextPipeline`, for seq2seq models (``t5``, ``pseudo_dec``) and causal LMs
  (``decoder_only`` prefix or causal LM, ``gpt2``: the prompt is continued). The T5 task prefix
  (``"summarize: "``, ``"translate English to German: "``) and generation defaults come from
  ``config.task_specific_params`` as in the T5 paper's text-to-text format (Raffel et al. 2020,
  arXiv 1910.10683, section 2.4).
- ``text-generation``: transformers' own pipeline for plain causal LMs; ours for seq2seq models and
  prefix LMs (transformers' pipeline would not pass ``prefix_mask``).
- ``text-classification``: transformers' own pipeline for sequence classifiers (``enct5``); for an
  LM, T5-style classification by generating the label text (score = its sequence probability).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from t5lab.errors import T5LabError

TASKS = ("text2text-generation", "summarization", "translation_xx_to_yy", "text-generation", "text-classification")
_TRANSLATION = re.compile(r"^translation_([a-z]{2,3})_to_([a-z]{2,3})$")
LANGUAGES = {
    "en": "English", "de": "German", "fr": "French", "ro": "Romanian", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "ru": "Russian", "zh": "Chinese", "ja": "Japanese", "ar": "Arabic",
}
# task_specific_params keys that are not generation settings
_NOT_GENERATION = {"prefix"}


class Text2TextPipeline:
    """Batched text-to-text generation with a task prefix, for seq2seq models and causal LMs.

    Call it with a string or a list of strings; returns ``[{key: text}, ...]`` per input (one dict
    per returned sequence), where ``key`` is ``generated_text``, ``summary_text`` or
    ``translation_text`` as in transformers 4.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        task: str = "text2text-generation",
        prefix: str | None = None,
        output_key: str = "generated_text",
        batch_size: int = 8,
        return_full_text: bool = False,
        **generate_kwargs: Any,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        params = task_params(model, task)
        self.prefix = params.get("prefix", "") if prefix is None else prefix
        self.output_key = output_key
        self.batch_size = batch_size
        self.return_full_text = return_full_text
        defaults = {k: v for k, v in params.items() if k not in _NOT_GENERATION}
        self.generate_kwargs = _normalize_generate_kwargs({**defaults, **generate_kwargs})

    def __call__(self, inputs: str | list[str], **generate_kwargs: Any) -> list[dict[str, str]] | list[list[dict[str, str]]]:
        from t5lab.explore.generation import sample

        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if not texts:
            raise T5LabError("no inputs given; pass a string or a non-empty list of strings")
        kwargs = {**self.generate_kwargs, **_normalize_generate_kwargs(generate_kwargs, defaults=False)}
        n = kwargs.get("num_return_sequences", 1)
        outputs: list[list[dict[str, str]]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            generated = sample(self.model, self.tokenizer, [self.prefix + t for t in chunk], **kwargs)
            for text, gens in zip(chunk, generated):
                gens = gens if isinstance(gens, list) else [gens]
                if self.return_full_text:
                    gens = [text + g for g in gens]
                outputs.append([{self.output_key: g} for g in gens])
        if single:
            return outputs[0]
        return [o[0] for o in outputs] if n == 1 else outputs

    def __repr__(self) -> str:
        return f"Text2TextPipeline(task={self.task!r}, model={type(self.model).__name__}, prefix={self.prefix!r})"


class GenerativeClassificationPipeline:
    """T5-style classification: the LM writes the label as text; the score is its probability."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, max_new_tokens: int = 8, prefix: str = ""):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prefix = prefix

    @torch.no_grad()
    def __call__(self, inputs: str | list[str]) -> list[dict[str, Any]]:
        from t5lab.explore._common import SEQ2SEQ, model_kind
        from t5lab.explore.generation import encode_prompts, generation_config

        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        config = generation_config(self.model, self.tokenizer, self.max_new_tokens, temperature=0)
        config.return_dict_in_generate = True
        config.output_scores = True
        results = []
        for start in range(0, len(texts), self.batch_size):
            enc = encode_prompts(self.model, self.tokenizer, [self.prefix + t for t in texts[start : start + self.batch_size]])
            out = self.model.generate(**enc, generation_config=config)
            new = out.sequences if model_kind(self.model) == SEQ2SEQ else out.sequences[:, enc["input_ids"].shape[1]:]
            # log-probabilities of the chosen tokens, (B, new tokens); 0 after the end of a sequence
            logp = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            pad = self.tokenizer.pad_token_id
            gen = new[:, -logp.shape[1]:]
            logp = torch.where(gen == pad, torch.zeros_like(logp), logp) if pad is not None else logp
            labels = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            for label, lp in zip(labels, logp.sum(-1)):
                results.append({"label": label.strip(), "score": float(lp.exp())})
        return results[0:1] if isinstance(inputs, str) else results


def task_params(model: Any, task: str) -> dict[str, Any]:
    """``config.task_specific_params[task]`` (T5 checkpoints carry prefixes and beam settings there)."""
    params = getattr(model.config, "task_specific_params", None) or {}
    return dict(params.get(task, {}))


def _normalize_generate_kwargs(kwargs: dict[str, Any], defaults: bool = True) -> dict[str, Any]:
    """Map transformers-4 style ``max_length``/``do_sample`` settings onto :func:`t5lab.sample` arguments."""
    kwargs = dict(kwargs)
    if "max_length" in kwargs:
        kwargs.setdefault("max_new_tokens", kwargs.pop("max_length"))
    if "min_length" in kwargs:
        kwargs.setdefault("min_new_tokens", kwargs.pop("min_length"))
    if kwargs.pop("do_sample", None) is False:
        kwargs["temperature"] = 0
    if defaults:
        kwargs.setdefault("temperature", 0)  # pipelines decode deterministically unless asked to sample
        kwargs.setdefault("max_new_tokens", 32)
    return kwargs


def _translation_prefix(model: Any, task: str, src: str, tgt: str) -> str:
    params = task_params(model, task)
    if "prefix" in params:
        return params["prefix"]
    return f"translate {LANGUAGES.get(src, src)} to {LANGUAGES.get(tgt, tgt)}: "


def pipeline(
    task: str,
    model: Any = None,
    tokenizer: Any = None,
    batch_size: int = 8,
    prefix: str | None = None,
    **kwargs: Any,
) -> Any:
    """A task pipeline for a t5lab or transformers model.

    Args:
        task: ``"text2text-generation"``, ``"summarization"``, ``"translation_xx_to_yy"`` (e.g.
            ``"translation_en_to_de"``), ``"text-generation"`` or ``"text-classification"``.
        model: a model object, or a model / run directory path.
        tokenizer: its tokenizer (loaded from the directory when ``model`` is a path).
        batch_size: inputs per ``generate`` call.
        prefix: overrides the task prefix from ``config.task_specific_params``.
        **kwargs: generation defaults (``max_new_tokens``, ``num_beams``, ``temperature``, ...).

    Returns:
        A callable pipeline.

    Raises:
        T5LabError: an unknown task, a missing model or tokenizer, or a model that cannot do it.
    """
    from t5lab.explore._common import CLASSIFIER, SEQ2SEQ, ensure_pad, is_prefix_lm, model_kind

    if model is None:
        raise T5LabError(f"pipeline({task!r}) needs model=...: a model object or a model/run directory")
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from t5lab.explore.run import load_run

        run = load_run(model)
        model, tokenizer = run.model, tokenizer or run.tokenizer
    if tokenizer is None:
        raise T5LabError(f"pipeline({task!r}) needs tokenizer=... for a model object")
    ensure_pad(tokenizer)
    kind = model_kind(model)
    if task == "text-classification":
        if kind == CLASSIFIER:
            import transformers

            return transformers.pipeline("text-classification", model=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs)
        return GenerativeClassificationPipeline(model, tokenizer, batch_size=batch_size, prefix=prefix or "", **kwargs)
    if kind == CLASSIFIER:
        raise T5LabError(f"{type(model).__name__} is a classifier; it can only run 'text-classification'")
    if task == "text-generation":
        if kind == SEQ2SEQ or is_prefix_lm(model):
            return Text2TextPipeline(model, tokenizer, task, prefix=prefix or "", batch_size=batch_size, **kwargs)
        import transformers

        return transformers.pipeline("text-generation", model=model, tokenizer=tokenizer, batch_size=batch_size, **kwargs)
    if task == "text2text-generation":
        return Text2TextPipeline(model, tokenizer, task, prefix=prefix or "", batch_size=batch_size, **kwargs)
    if task == "summarization":
        if prefix is None and "prefix" not in task_params(model, task):
            prefix = "summarize: "
        return Text2TextPipeline(model, tokenizer, task, prefix, "summary_text", batch_size, **kwargs)
    if task == "translation" and {"src_lang", "tgt_lang"} <= set(kwargs):
        task = f"translation_{kwargs.pop('src_lang')}_to_{kwargs.pop('tgt_lang')}"
    m = _TRANSLATION.match(task)
    if m:
        if prefix is None:
            prefix = _translation_prefix(model, task, m.group(1), m.group(2))
        return Text2TextPipeline(model, tokenizer, task, prefix, "translation_text", batch_size, **kwargs)
    raise T5LabError(f"unknown pipeline task {task!r}; use one of: {', '.join(TASKS)}")
