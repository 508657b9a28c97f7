"""PPO math: GAE by hand, masking after EOS, KL >= 0 (hypothesis), closed-form estimators."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from t5lab.rl.kl import AdaptiveKLController, exact_kl, kl_per_token, sampled_kl
from t5lab.rl.ppo import compute_gae, masked_mean, masked_whiten, per_token_rewards, ppo_loss
from t5lab.rl.sampler import process_logits


def test_gae_matches_hand_computation():
    # one row, 3 real tokens then 1 masked; gamma = 0.9, lambda = 0.5
    rewards = torch.tensor([[1.0, 0.0, 2.0, 7.0]])
    values = torch.tensor([[0.5, 1.0, -1.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d2 = 2.0 + 0.9 * 0.0 - (-1.0)  # = 3.0; V after the last real token is 0
    d1 = 0.0 + 0.9 * (-1.0) - 1.0  # = -1.9
    d0 = 1.0 + 0.9 * 1.0 - 0.5  # = 1.4
    a2 = d2
    a1 = d1 + 0.45 * a2
    a0 = d0 + 0.45 * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 1.0, a2 - 1.0, 0.0]]))


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.randn(3, 6)
    values = torch.randn(3, 6)
    mask = torch.ones(3, 6)
    adv, _ = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    to_go = rewards.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(adv, to_go - values)


def test_per_token_rewards_put_score_on_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    r = per_token_rewards(torch.tensor([1.0, -2.0]), kl, mask, beta=0.5)
    torch.testing.assert_close(r, torch.tensor([[-0.05, 1.0 - 0.1, 0.0], [-0.2, -0.25, -2.0 - 0.3]]))


def test_positions_after_eos_do_not_matter():
    """Garbage in masked positions changes neither rewards, advantages, returns nor the loss."""
    torch.manual_seed(0)
    B, T = 3, 5
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    scores = torch.randn(B)
    kl, values = torch.rand(B, T), torch.randn(B, T)
    logp, old_logp, new_values = -torch.rand(B, T), -torch.rand(B, T), torch.randn(B, T)

    def pipeline(kl, values, logp, old_logp, new_values):
        rewards = per_token_rewards(scores, kl * mask, mask, 0.2)
        adv, ret = compute_gae(rewards, values * mask, mask, 1.0, 0.95)
        adv = masked_whiten(adv, mask)
        loss, _ = ppo_loss(logp, old_logp, adv, new_values, values * mask, ret, mask, 0.2, 0.2, 0.1)
        return rewards, adv, ret, loss

    clean = pipeline(kl, values, logp, old_logp, new_values)
    junk = (1 - mask) * 1e3
    dirty = pipeline(kl + junk, values - junk, logp - junk, old_logp + junk, new_values + junk)
    for a, b in zip(clean, dirty):
        torch.testing.assert_close(a, b)
    assert (clean[1][mask == 0] == 0).all() and (clean[2][mask == 0] == 0).all()


def test_ppo_loss_clipping_closed_form():
    # ratio e^0.5 = 1.65 > 1.2 with a positive advantage: the clipped term wins, no gradient
    logp = torch.tensor([[0.5]], requires_grad=True)
    loss, stats = ppo_loss(logp, torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1, 1), torch.zeros(1, 1),
                           torch.zeros(1, 1), torch.ones(1, 1), cliprange=0.2, cliprange_value=0.2, vf_coef=0.0)
    torch.testing.assert_close(loss, torch.tensor(-1.2))
    loss.backward()
    assert logp.grad.abs().sum() == 0 and stats["clip_frac"] == 1.0
    # value clipping: V moved 1.0 from V_old = 0 towards R = 2; clipped V = 0.2 -> (0.2 - 2)^2 = 3.24
    _, stats = ppo_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1),
                        torch.zeros(1, 1), torch.full((1, 1), 2.0), torch.ones(1, 1), 0.2, 0.2, 1.0)
    torch.testing.assert_close(stats["value_loss"], torch.tensor(0.5 * 3.24))


def test_masked_mean_is_token_weighted():
    x = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert masked_mean(x, m).item() == pytest.approx(16.0 / 4)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    vocab=st.integers(2, 40),
    temperature=st.floats(0.05, 5.0),
    top_k=st.one_of(st.none(), st.integers(1, 40)),
    top_p=st.one_of(st.none(), st.floats(0.01, 1.0)),
    scale=st.floats(0.1, 30.0),
)
def test_exact_kl_is_nonnegative_and_matches_torch(seed, vocab, temperature, top_k, top_p, scale):
    g = torch.Generator().manual_seed(seed)
    policy_logits = torch.randn(3, 4, vocab, generator=g) * scale
    ref_logits = torch.randn(3, 4, vocab, generator=g) * scale
    p = torch.log_softmax(process_logits(policy_logits, temperature, top_k, top_p), -1)
    q = torch.log_softmax(ref_logits / temperature, -1)
    kl = exact_kl(p, q)
    assert torch.isfinite(kl).all()
    assert (kl >= 0).all()
    # float64 reference, written independently: sum over the support of the processed policy
    p64 = torch.log_softmax(policy_logits.double() / temperature, -1)
    keep = torch.isfinite(process_logits(policy_logits, temperature, top_k, top_p))
    p64 = torch.log_softmax(p64.masked_fill(~keep, -math.inf), -1)
    q64 = torch.log_softmax(ref_logits.double() / temperature, -1)
    terms = torch.where(keep, p64.exp() * (p64 - q64), torch.zeros_like(p64))
    torch.testing.assert_close(kl.double(), terms.sum(-1), atol=1e-3, rtol=1e-3)
    # identical distributions: zero
    assert exact_kl(p, p).abs().max() < 1e-6


def test_sampled_estimators_closed_form_and_unbiased():
    lp, lq = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    torch.testing.assert_close(sampled_kl(lp, lq, "k1"), torch.tensor([math.log(2.0)]))
    torch.testing.assert_close(sampled_kl(lp, lq, "k3"), torch.tensor([(0.5 - 1) - math.log(0.5)]))
    # both are unbiased: their expectation under pi equals the exact KL
    g = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(1, 1, 6, generator=g), -1)
    q = torch.log_softmax(torch.randn(1, 1, 6, generator=g), -1)
    exact = exact_kl(p, q)
    for est in ("k1", "k3"):
        per_token = torch.stack(
            [kl_per_token(p, q, torch.tensor([[v]]), est) for v in range(6)], -1
        )  # (1, 1, V): the estimate for each possible sampled token
        torch.testing.assert_close((per_token * p.exp()).sum(-1), exact, atol=1e-5, rtol=1e-5)


def test_adaptive_controller_follows_ziegler():
    ctl = AdaptiveKLController(0.2, target=1.0, horizon=100)
    ctl.update(current_kl=3.0, n_steps=10)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 10 / 100))
    ctl.update(current_kl=0.9, n_steps=10)  # error -0.1
    assert ctl.value == pytest.approx(0.2 * 1.02 * (1 - 0.1 * 10 / 100))
