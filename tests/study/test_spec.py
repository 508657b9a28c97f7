"""Study files: expansion into points x seeds, and bad files as one-line errors before any run."""

from __future__ import annotations

import pytest

from t5lab.cli import main
from t5lab.errors import ConfigError
from t5lab.study.runner import builtin_path, plan
from t5lab.study.spec import expand, read_study
from tests.study.conftest import tiny_study


def test_points_times_seeds_with_names_and_seeds():
    study = read_study(tiny_study(seeds=3, axes={"variants": ["t5", "pseudo_dec"], "train.lr": [1e-3, 3e-3]}))
    points = expand(study)
    assert [p.key for p in points] == [
        "variant=t5,lr=0.001", "variant=t5,lr=0.003", "variant=pseudo_dec,lr=0.001", "variant=pseudo_dec,lr=0.003"
    ]
    p = points[3]
    assert [c.train.seed for c in p.configs] == [0, 1, 2]
    assert [c.name for c in p.configs] == [f"tiny-variant=pseudo_dec,lr=0.003-seed={s}" for s in range(3)]
    assert p.configs[0].model.variant == "pseudo_dec" and p.configs[0].train.lr == 3e-3
    assert p.group == "lr=0.003"


def test_objectives_apply_to_text_tasks_only_and_lm_follows_the_variant():
    tasks = {"copy": {"data.task": "copy", "data.options": {"alphabet": "abcd", "min_len": 2, "max_len": 4}},
             "text": {"data.task": "botchan", "data.train": 32, "data.val": 4, "data.test": 4}}
    variants = {"causal": {"model.variant": "decoder_only"},
                "prefix": {"model.variant": "decoder_only", "model.options.prefix_lm": True},
                "encdec": {"model.variant": "t5"}}
    points = expand(read_study(tiny_study(axes={"variants": variants, "tasks": tasks, "objectives": ["lm", "span_corruption"]})))
    by_key = {p.key: p.configs[0] for p in points}
    assert len(points) == 3 * (1 + 2)  # copy drops the objective axis: one point per variant
    assert "variant=causal,task=copy,objective=-" in by_key
    lm = {v: by_key[f"variant={v},task=text,objective=lm"].data for v in variants}
    assert (lm["causal"].objective, lm["causal"].loss_on) == ("causal_lm", "all")  # full LM
    assert lm["prefix"].objective == "prefix_lm" and lm["encdec"].objective == "prefix_lm"
    assert by_key["variant=encdec,task=text,objective=span_corruption"].data.objective == "span_corruption"
    # a task level replaces the base's task options
    assert by_key["variant=encdec,task=text,objective=lm"].data.options == {}


def test_quick_mode_and_overrides():
    study = read_study(tiny_study(seeds=3, quick={"seeds": 2, "set": {"train.max_steps": 3}}), ["train.lr=0.01"], quick=True)
    assert study.seeds == 2 and study.base["train"]["max_steps"] == 3 and study.base["train"]["lr"] == 0.01
    assert read_study(tiny_study(), ["seeds=4"]).seeds == 4


@pytest.mark.parametrize(
    "study,message",
    [
        (tiny_study(axes={"colour": ["red"]}), "unknown study axis 'colour'"),
        (tiny_study(seeds=0), "seeds=0: must be an integer >= 1"),
        (tiny_study(seeds="two"), "seeds='two'"),
        (tiny_study(match={"params": 10**9}), "cannot reach 1,000,000,000"),
        (tiny_study(match={"params": "gpt3"}), "not a label of the variants axis"),
        (tiny_study(colour=1), "unknown study key 'colour'"),
        (tiny_study(axes={"variants": ["t5", "nonesuch"]}), "nonesuch"),
        (tiny_study(axes={"variants": {"x": {"model.widht": 3}}}), "unknown config key 'model.widht'"),
        (tiny_study(match="flops"), "match.flops: unknown"),
    ],
)
def test_bad_study_files_are_one_line_errors(study, message):
    with pytest.raises(ConfigError) as err:
        plan(study)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_error_before_anything_is_written(tmp_path, capsys):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_study(match={"params": 10**9})))
    out = tmp_path / "studies"
    assert main(["study", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: match: params") and err.count("\n") == 1
    assert not out.exists()


def test_builtin_arch_study_plans_matched():
    with pytest.raises(ConfigError, match="built-in studies: arch"):
        builtin_path("nonesuch")
    p = plan(builtin_path("arch"), quick=True)
    assert p.study.seeds == 2 and len(p.points) == 4 * 3  # 4 variants x (reverse + text x 2 objectives)
    for pt in p.points:
        assert abs(pt.info["params"] - pt.info["params_target"]) <= 0.05 * pt.info["params_target"]
    groups = {}
    for pt in p.points:
        groups.setdefault(pt.group, set()).add(pt.info["token_budget"])
    assert all(len(budgets) == 1 for budgets in groups.values())  # one token budget per comparison


def test_cli_plan_prints_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_study(seeds=2, match="params")))
    assert main(["study", str(path), "seeds=3", "--plan"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("study tiny: 2 points x 3 seeds = 6 runs")
    assert "variant=causal:" in out and "params (matched d_ff=" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
    assert main(["study", str(path), "--builtin", "arch"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["study", "--report", str(tmp_path)]) == 2
    assert "not a study directory" in capsys.readouterr().err
