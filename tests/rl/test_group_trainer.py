"""GRPO / RLOO trainers on tiny models of every LM variant: exact rollout log-probs, EOS masking,
learning a toy reward, save/resume."""

from __future__ import annotations

import copy

import pytest
import torch

from t5lab.rl.group import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
from t5lab.rl.sampler import SampleOutput, score_responses
from tests.rl.test_ppo_trainer import _toy_score
from tests.rl.test_sampler import _model

VARIANTS = ["t5", "pseudo_dec", "decoder_only", "prefix_lm", "gpt2"]
ALGOS = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}


def _lm(kind: str, tiny_t5):
    return _model(kind, tiny_t5)


def _prompts(step: int, batch: int) -> torch.Tensor:
    return torch.randint(3, 64, (batch, 5), generator=torch.Generator().manual_seed(1000 + step))


def _trainer(algo: str, policy, **over):
    cfg_cls, trainer_cls = ALGOS[algo]
    base = dict(learning_rate=3e-3, batch_size=4, group_size=4, mini_batch_size=8, max_new_tokens=6, seed=0)
    return trainer_cls(policy, cfg_cls(**{**base, **over}))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("kind", VARIANTS)
def test_one_step_on_every_variant(tiny_t5, kind, algo):
    trainer = _trainer(algo, _lm(kind, tiny_t5), epochs=2)
    ids, mask = trainer.repeat(_prompts(0, 4), None)
    sample = trainer.generate(_prompts(0, 4))
    assert sample.response_ids.shape[0] == 16
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    stats = trainer.step(ids, mask, sample, _toy_score(sample))
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values()), stats
    assert stats["rollout_logprob_err"] < 1e-4  # the sampler's log-probs are the re-scored ones
    assert stats["kl"] >= 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))


@pytest.mark.parametrize("algo, over", [("grpo", {}), ("grpo", dict(kl_estimator="k3", loss_norm="constant")),
                                        ("rloo", {}), ("rloo", dict(kl_estimator="exact", cliprange=0.2))])
def test_tokens_after_eos_do_not_change_the_update(tiny_t5, algo, over):
    """Two rollouts that differ only after EOS give the same update and statistics."""
    ids = _prompts(0, 2)
    policy = _lm("t5", tiny_t5)
    a = _trainer(algo, copy.deepcopy(policy), batch_size=2, group_size=2, mini_batch_size=2, epochs=2, **over)
    b = _trainer(algo, copy.deepcopy(policy), batch_size=2, group_size=2, mini_batch_size=2, epochs=2, **over)
    rep, rep_mask = a.repeat(ids, None)
    tokens = torch.tensor([[5, 9, 1, 0, 0, 0], [7, 1, 0, 0, 0, 0], [4, 4, 4, 4, 4, 4], [8, 3, 6, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    logprobs = score_responses(policy, rep, rep_mask, tokens, mask)
    junk = torch.where(mask.bool(), tokens, torch.randint(2, 64, tokens.shape))
    scores = torch.tensor([1.0, -1.0, 0.5, 0.0])
    stats_a = a.step(rep, rep_mask, SampleOutput(tokens, mask, logprobs), scores)
    stats_b = b.step(rep, rep_mask, SampleOutput(junk, mask, logprobs), scores)
    for key in stats_a:
        assert stats_a[key] == pytest.approx(stats_b[key], rel=1e-5, abs=1e-6), key
    for (name, pa), pb in zip(a.policy.named_parameters(), b.policy.parameters()):
        torch.testing.assert_close(pa, pb, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_mean_reward_rises_on_toy_task(tiny_t5, algo):
    trainer = _trainer(algo, _lm("t5", tiny_t5), kl_coef=0.01)
    history = []
    for step in range(20):
        ids = _prompts(step, 4)
        sample = trainer.generate(ids)
        rep, mask = trainer.repeat(ids, None)
        history.append(trainer.step(rep, mask, sample, _toy_score(sample))["reward_mean"])
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert first < 0.25 and last > first + 0.25, (first, last)


@pytest.mark.parametrize("algo", ALGOS)
def test_save_and_resume_equal_an_uninterrupted_run(tiny_t5, tmp_path, algo):
    policy = _lm("t5", tiny_t5)
    fresh = copy.deepcopy(policy)
    ref = copy.deepcopy(policy)

    def run(trainer, steps):
        out = []
        for step in steps:
            ids = _prompts(step, 4)
            sample = trainer.generate(ids)
            out.append(trainer.step(*trainer.repeat(ids, None), sample, _toy_score(sample)))
        return out

    trainer = _trainer(algo, policy)
    trainer.ref_model = ref
    run(trainer, range(2))
    trainer.save(tmp_path / "last")
    uninterrupted = run(trainer, range(2, 4))
    resumed = _trainer(algo, fresh)
    resumed.ref_model = copy.deepcopy(ref)
    resumed.load(tmp_path / "last")
    assert resumed.step_count == 2
    again = run(resumed, range(2, 4))
    for got, want in zip(again, uninterrupted):
        assert got == pytest.approx(want)
    for (name, pa), pb in zip(trainer.policy.named_parameters(), resumed.policy.parameters()):
        torch.testing.assert_close(pa, pb, msg=name)
