"""PPOTrainer end to end on tiny models: learning, masking, detach_head, save/resume."""

from __future__ import annotations

import copy

import pytest
import torch

from t5lab.rl.ppo import PPOConfig, PPOTrainer
from t5lab.rl.sampler import SampleOutput, forward_responses


def _prompts(step: int, batch: int = 16) -> torch.Tensor:
    return torch.randint(3, 64, (batch, 5), generator=torch.Generator().manual_seed(1000 + step))


def _toy_score(sample: SampleOutput) -> torch.Tensor:
    """Fraction of a response's tokens in [3, 11): about 1/8 for a random policy."""
    hit = ((sample.response_ids >= 3) & (sample.response_ids < 11)).float() * sample.response_mask
    return hit.sum(1) / sample.response_mask.sum(1)


def _config(**over) -> PPOConfig:
    base = dict(learning_rate=3e-3, batch_size=16, mini_batch_size=8, ppo_epochs=2, max_new_tokens=6,
                init_kl_coef=0.05, seed=0)
    return PPOConfig(**{**base, **over})


@pytest.mark.slow
def test_mean_reward_rises_on_toy_task(value_t5):
    trainer = PPOTrainer(value_t5, _config())
    history = []
    for step in range(24):
        ids = _prompts(step)
        sample = trainer.generate(ids)
        stats = trainer.step(ids, None, sample, _toy_score(sample))
        history.append(stats)
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.values()), stats
        assert stats["kl"] >= 0
        # the first PPO pass re-scores the rollout with the same weights: ratio 1
        assert stats["rollout_logprob_err"] < 1e-4
    first = sum(h["reward_mean"] for h in history[:3]) / 3
    last = sum(h["reward_mean"] for h in history[-3:]) / 3
    assert first < 0.25 and last > first + 0.3, (first, last)
    assert history[-1]["kl"] > 0.1  # the policy really moved away from the reference


@pytest.mark.slow
def test_kl_penalty_holds_the_policy_near_the_reference(value_t5):
    """With a zero score, only the KL term acts: beta > 0 keeps KL small where beta = 0 drifts.

    Guards the direct KL gradient: the exact KL_t depends on the state, not on the sampled token,
    so as a reward alone it would not pull pi(.|s_t) back to the reference.
    """
    final = {}
    for beta in (0.0, 0.2):
        trainer = PPOTrainer(copy.deepcopy(value_t5), _config(init_kl_coef=beta))
        kls = []
        for step in range(12):
            ids = _prompts(step)
            stats = trainer.step(ids, None, trainer.generate(ids), torch.zeros(16))
            kls.append(stats["kl"])
        final[beta] = sum(kls[-4:]) / 4
    assert final[0.2] < 0.5 and final[0.0] > 3 * final[0.2], final


def test_tokens_after_eos_do_not_change_the_update(value_t5):
    """Two rollouts that differ only after EOS give the same update and statistics."""
    ids = _prompts(0, batch=4)
    base = _config(batch_size=4, mini_batch_size=2)
    trainer_a = PPOTrainer(copy.deepcopy(value_t5), base, ref_model=copy.deepcopy(value_t5))
    trainer_b = PPOTrainer(copy.deepcopy(value_t5), base, ref_model=copy.deepcopy(value_t5))
    tokens = torch.tensor([[5, 9, 1, 0, 0, 0], [7, 1, 0, 0, 0, 0], [4, 4, 4, 4, 4, 4], [8, 3, 6, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    from t5lab.rl.sampler import score_responses

    logprobs = score_responses(value_t5, ids, None, tokens, mask)
    junk = torch.where(mask.bool(), tokens, torch.randint(2, 64, tokens.shape))
    scores = torch.tensor([1.0, -1.0, 0.5, 0.0])
    stats_a = trainer_a.step(ids, None, SampleOutput(tokens, mask, logprobs), scores)
    stats_b = trainer_b.step(ids, None, SampleOutput(junk, mask, logprobs), scores)
    for key in stats_a:
        assert stats_a[key] == pytest.approx(stats_b[key], rel=1e-5, abs=1e-6), key
    for (name, pa), pb in zip(trainer_a.policy.named_parameters(), trainer_b.policy.parameters()):
        torch.testing.assert_close(pa, pb, msg=name)


def test_detach_head_keeps_value_gradients_out_of_the_body(value_t5):
    trainer = PPOTrainer(value_t5, _config(detach_value_head=True))
    assert value_t5.head_detached
    ids = _prompts(0, batch=4)
    resp = torch.randint(2, 64, (4, 5))
    values = forward_responses(value_t5, ids, None, resp).values
    ((values - 1.0) ** 2).mean().backward()  # a pure value loss
    head = [p for n, p in value_t5.named_parameters() if n.startswith("v_head")]
    body = [p for n, p in value_t5.named_parameters() if not n.startswith("v_head")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in body)
    # attached again, the same loss reaches the body
    value_t5.zero_grad()
    value_t5.attach_head()
    ((forward_responses(value_t5, ids, None, resp).values - 1.0) ** 2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in body)
    del trainer


def test_save_and_resume_equal_an_uninterrupted_run(value_t5, tmp_path):
    ref = copy.deepcopy(value_t5)
    config = _config(batch_size=4, mini_batch_size=2, adaptive_kl=True, target_kl=0.5, kl_horizon=100)

    def run(trainer, steps):
        out = []
        for step in steps:
            ids = _prompts(step, batch=4)
            sample = trainer.generate(ids)
            out.append(trainer.step(ids, None, sample, _toy_score(sample)))
        return out

    fresh_policy = copy.deepcopy(value_t5)
    trainer = PPOTrainer(value_t5, config, ref_model=ref)
    run(trainer, range(2))
    trainer.save(tmp_path / "last")
    assert (tmp_path / "last" / "model" / "model.safetensors").exists()
    assert not (tmp_path / "last.tmp").exists()
    uninterrupted = run(trainer, range(2, 4))

    resumed = PPOTrainer(fresh_policy, config, ref_model=copy.deepcopy(ref))
    resumed.load(tmp_path / "last")
    assert resumed.step_count == 2
    assert resumed.kl_ctl.value == pytest.approx(trainer.kl_ctl.value, rel=0.2)  # same controller path
    again = run(resumed, range(2, 4))
    assert len(again) == len(uninterrupted)
    for got, want in zip(again, uninterrupted):  # pytest >= 9.2 refuses approx() on nested data
        assert got == pytest.approx(want)
    for (name, pa), pb in zip(trainer.policy.named_parameters(), resumed.policy.parameters()):
        torch.testing.assert_close(pa, pb, msg=name)


def test_policy_without_value_head_is_refused(tiny_t5):
    trainer = PPOTrainer(tiny_t5, _config(batch_size=2, mini_batch_size=1))
    ids = _prompts(0, batch=2)
    sample = trainer.generate(ids)
    with pytest.raises(ValueError, match="value-head"):
        trainer.step(ids, None, sample, torch.zeros(2))


@pytest.mark.parametrize(
    "bad", [dict(kl_estimator="k2"), dict(mini_batch_size=3), dict(gamma=1.5), dict(learning_rate=0.0)]
)
def test_bad_ppo_config_raises(bad):
    with pytest.raises(ValueError):
        _config(**bad)
