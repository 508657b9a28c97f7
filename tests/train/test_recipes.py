"""Shipped recipes (src/t5lab/configs/recipes/*.yaml): each resolves, keeps its task's seed definition,
fits its longest example into data.max_length, and trains end to end when overridden to tiny sizes."""

from __future__ import annotations

from importlib import resources

import pytest

from t5lab.config import load_plans
from t5lab.tasks import build_splits, get_task
from t5lab.tokenizers import encode_lengths
from t5lab.train.run import build_tokenizer_for, train

RECIPES = resources.files("t5lab") / "configs" / "recipes"
NAMES = sorted(p.name for p in RECIPES.iterdir() if p.name.endswith(".yaml"))

# the longest input/target, in characters (= char tokens, eos not counted), of each task's seed preset,
# worked out by hand from src/t5lab/tasks/synthetic.py
LONGEST = {
    "sort": 60,  # 60 symbols
    "numbersort": 30 * 3 + 29,  # 30 three-digit numbers and the spaces between them
    "long_addition": 20 + 1 + 20,  # "a+b" with two 20-digit operands (the sum has at most 21 digits)
}
# the same with tokenizer: word (one token per whitespace-separated word)
LONGEST_WORDS = {"numbersort": 30}  # 30 numbers
# (double)histogram.yaml use word tokens and a mixture: their own test below

# a few steps on a few examples: the recipe's model, task and schedule, seconds instead of minutes
TINY = ["data.train=64", "data.val=8", "data.test=8", "train.max_steps=3", "train.val_check_interval=3",
        "train.val_examples=8", "train.eval_batch_size=8", "train.batch_size=8", "train.warmup_steps=1",
        "train.log_every_n_steps=1"]


def test_the_recipes_listed_here_are_shipped():
    assert {"copy.yaml", "copy-decoder_only.yaml", "sort.yaml", "numbersort.yaml", "long_addition.yaml",
            "histogram.yaml", "doublehistogram.yaml"} <= set(NAMES)


def test_a_variants_own_recipe_is_the_one_the_bench_picks():
    from t5lab.bench.tta import find_recipe

    assert find_recipe("copy", "decoder_only") == RECIPES / "copy-decoder_only.yaml"
    [(plan, _)] = load_plans(str(RECIPES / "copy-decoder_only.yaml"), [])
    assert plan.cfg.model.variant == "decoder_only"
    assert plan.cfg.model.options == {"prefix_lm": True, "position_encoding": "absolute", "target_positions": "restart"}
    # the same recipe as copy.yaml but for the model
    [(base, _)] = load_plans(str(RECIPES / "copy.yaml"), [])
    assert plan.cfg.train == base.cfg.train and plan.cfg.data == base.cfg.data


def test_histogram_recipes_differ_by_their_model_and_the_length_of_the_decay():
    from t5lab.bench.tta import find_recipe

    assert find_recipe("histogram", "decoder_only") == RECIPES / "histogram-decoder_only.yaml"
    assert find_recipe("histogram", "pseudo_dec") == RECIPES / "histogram.yaml"
    [(pd, _)] = load_plans(str(RECIPES / "histogram.yaml"), [])
    [(do, _)] = load_plans(str(RECIPES / "histogram-decoder_only.yaml"), [])
    assert (pd.cfg.model.variant, do.cfg.model.variant) == ("pseudo_dec", "decoder_only")
    assert pd.cfg.model.options == {"position_encoding": "absolute"}
    assert do.cfg.model.options["target_positions"] == "restart"
    # the same training data; pseudo_dec validates on 1,000 strings (200 overshot its test set)
    assert pd.cfg.data.model_copy(update={"val": 200}) == do.cfg.data
    assert pd.cfg.tokenizer == do.cfg.tokenizer
    # the same training but pseudo_dec's decay three times as long (the recipe headers say why)
    assert (pd.cfg.train.max_steps, do.cfg.train.max_steps) == (24000, 8000)
    val = {"val_examples": 200, "eval_batch_size": 200, "val_check_interval": 500}
    assert pd.cfg.train.model_copy(update={"max_steps": 8000, "stop_at": do.cfg.train.stop_at, **val}) == do.cfg.train
    assert (pd.cfg.train.val_examples, pd.cfg.data.val) == (1000, 1000)
    sizes = ("d_model", "d_ff", "d_kv", "num_heads", "num_layers", "dropout")
    assert [getattr(pd.cfg.model, k) for k in sizes] == [getattr(do.cfg.model, k) for k in sizes]


@pytest.mark.parametrize("name", NAMES)
def test_recipe_is_its_seed_task_with_a_stop_target(name):
    [(plan, _)] = load_plans(str(RECIPES / name), [])
    cfg = plan.cfg
    # the task the recipe reports on (a mixture's evaluated entry) is exactly its seed definition
    evaluated = plan.task.evaluated_task
    assert evaluated.name == name.split("-")[0].removesuffix(".yaml")
    assert evaluated.options() == get_task(evaluated.name, preset="seed").options() and cfg.data.test == 1000
    space = evaluated.space_size()
    assert cfg.data.train == (50000 if space is None else min(50000, space))
    assert cfg.train.stop_at and cfg.data.val > 0 and cfg.trainer.num_threads == 1


@pytest.mark.parametrize("name", [n for n in NAMES if n.split("-")[0].removesuffix(".yaml") in LONGEST])
def test_recipe_max_length_fits_the_longest_example(name):
    [(plan, _)] = load_plans(str(RECIPES / name), [])
    cfg = plan.cfg
    longest = (LONGEST_WORDS if cfg.tokenizer.kind == "word" else LONGEST)[plan.task.evaluated_task.name]
    assert longest + 1 <= cfg.data.max_length  # + eos: nothing is truncated
    # and the hand count is the real one: 3000 drawn examples reach it, through the recipe's tokenizer
    splits = build_splits(plan.task, 3000, 0, 0, cfg.data.seed)
    rows = splits["train"]
    lengths = encode_lengths(build_tokenizer_for(cfg, plan.task, splits), [r.input for r in rows] + [r.target for r in rows])
    assert max(lengths) == longest + 1


@pytest.mark.parametrize("name", NAMES)
def test_recipe_trains_end_to_end_when_tiny(name, tmp_path):
    [result] = train(str(RECIPES / name), TINY, out=tmp_path, progress=False)
    assert (result.run_dir / "DONE").exists()
    assert "val_exact_match" in result.metrics and "test_exact_match" in result.metrics


def test_numbersort_recipe_gives_every_number_its_own_token():
    """numbersort.yaml's word tokenizer, built from its 50,000 training lists, has all 900 numbers
    100..999 as words, so no held-out number is ever spelled digit by digit."""
    [(plan, _)] = load_plans(str(RECIPES / "numbersort.yaml"), [])
    cfg = plan.cfg
    assert cfg.tokenizer.kind == "word"
    splits = build_splits(plan.task, cfg.data.train, 0, 0, cfg.data.seed)
    vocab = build_tokenizer_for(cfg, plan.task, splits).get_vocab()
    assert all(f"\u2581{n}" in vocab for n in range(100, 1000))


@pytest.mark.parametrize("name", ["histogram.yaml", "doublehistogram.yaml"])
def test_histogram_recipes_line_every_value_up_with_its_letter(name):
    """(double)histogram.yaml (a mixture of the evaluated task with copy of the same kind of strings,
    doublehistogram.yaml also with histogram, each marked by a suffix word; word tokens): a letter and
    a value are one token each, so target token j is input letter j's value (or the letter itself,
    for copy), no copy string became a word, val/test hold the evaluated task only, and the longest
    input (80 letters + suffix + eos) fits data.max_length."""
    [(plan, _)] = load_plans(str(RECIPES / name), [])
    cfg = plan.cfg
    task = plan.task.evaluated_task.name
    assert cfg.data.task == "mixture" and cfg.tokenizer.kind == "word" and task == name.removesuffix(".yaml")
    splits = build_splits(plan.task, cfg.data.train, cfg.data.val, cfg.data.test, cfg.data.seed)
    tok = build_tokenizer_for(cfg, plan.task, splits)
    assert all(r.input.endswith(f" {task}") for r in splits["val"] + splits["test"])
    rows = splits["train"][:3000] + splits["test"]
    letters = [r.input.rsplit(" ", 1)[0] for r in rows]
    assert {r.input.rsplit(" ", 1)[1] for r in rows} == set(cfg.data.options["tasks"])
    assert encode_lengths(tok, [r.input for r in rows]) == [len(x) + 2 for x in letters]  # + suffix + eos
    targets = encode_lengths(tok, [r.target for r in rows])
    assert targets == [len(x) + 1 for x in letters]  # one token per value (or letter), + eos
    assert max(len(x) for x in letters) + 2 == 82 <= cfg.data.max_length


def test_long_addition_recipe_lines_up_digits_of_one_significance():
    """long_addition.yaml writes each sum least significant digit first (data.reverse_target) and
    numbers every digit by its significance (target_positions: digits): in the built model's batches
    each sum digit shares its position with the operand digits it is the sum of."""
    import torch

    from t5lab.formulation import Formulation
    from t5lab.models.positions import digit_position_ids
    from t5lab.plan import resolve
    from t5lab.variants import BuildInfo, get_variant

    [(plan, _)] = load_plans(str(RECIPES / "long_addition.yaml"), [])
    cfg = plan.cfg
    assert cfg.data.reverse_target and cfg.model.options["target_positions"] == "digits"
    splits = build_splits(plan.task, 200, 0, 0, cfg.data.seed)
    tok = build_tokenizer_for(cfg, plan.task, splits)
    model = get_variant(cfg.model.variant).build(cfg.model, BuildInfo.for_run(cfg, plan.task, tok))
    examples = Formulation.from_plan(resolve(cfg), tok).encode_all(splits["train"])
    batch = Formulation.from_plan(resolve(cfg), tok).collate(examples)
    digits = torch.tensor(model.config.digit_token_ids)
    positions = digit_position_ids(batch["input_ids"], batch["prefix_mask"], digits, batch["attention_mask"])
    for row, (record, example) in enumerate(zip(splits["train"], examples)):
        a, b = record.input.split("+")
        assert example.target[:-1] == tok(record.target[::-1], add_special_tokens=False)["input_ids"]
        pos = positions[row].tolist()
        start = len(example.prompt)
        for significance in range(1, len(record.target) + 1):
            sum_position = pos[start + significance - 1]
            assert sum_position == significance
            # the operand digits of that significance (counted from the right) share it
            if significance <= len(a):
                assert pos[len(a) - significance] == significance
            if significance <= len(b):
                assert pos[len(a) + 1 + len(b) - significance] == significance


def test_numbersort_recipe_windows_hold_every_pair_of_neighbours():
    """numbersort.yaml mixes the seed lists with lists from windows of numbers, so that neighbours
    (k, k+1) meet often; every such pair of 100..999 lies inside one window, val and test are seed
    lists only, and half of the training lists come from the windows."""
    [(plan, _)] = load_plans(str(RECIPES / "numbersort.yaml"), [])
    cfg = plan.cfg
    assert cfg.data.task == "mixture" and plan.task.evaluated_task.name == "numbersort"
    entries = cfg.data.options["tasks"]
    windows = [e["options"] for label, e in entries.items() if label != cfg.data.options["evaluate"]]
    assert all(entries[label].get("task", label) == "numbersort" for label in entries)
    assert all(any(w["min_value"] <= k and k + 1 <= w["max_value"] for w in windows) for k in range(100, 999))
    assert min(w["min_value"] for w in windows) == 100 and max(w["max_value"] for w in windows) == 999
    rates = {label: e.get("rate", 1.0) for label, e in entries.items()}
    assert rates[cfg.data.options["evaluate"]] == sum(rates.values()) / 2
    splits = build_splits(plan.task, 2000, 200, 200, cfg.data.seed)
    seed_task = get_task("numbersort", preset="seed")
    for r in splits["val"] + splits["test"]:
        assert r.target == seed_task.solve(r.input)
    # a window list spans at most 199 (its window) and has 10 numbers or more; about half are such
    spans = [(lambda v: max(v) - min(v) <= 199 and len(v) >= 10)(list(map(int, r.input.split())))
             for r in splits["train"] if r.input]
    assert 0.45 < sum(spans) / len(splits["train"]) < 0.55
