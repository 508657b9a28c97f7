"""GRPO / RLOO math on hand-made numbers: advantages, loss normalisations, clipping, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from t5lab.rl.group import (
    GRPOConfig,
    RLOOConfig,
    clipped_surrogate,
    group_advantages,
    grpo_loss,
    leave_one_out_advantages,
    rloo_loss,
)
from t5lab.rl.kl import sampled_kl


def test_group_advantages_with_std_is_grpo():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0])
    adv = group_advantages(scores, group_size=4)
    std = math.sqrt(4 * 0.25 / 3)  # unbiased std of [1, 0, 0, 1]
    want = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 0, 0, 0, 0]
    torch.testing.assert_close(adv, torch.tensor(want))


def test_group_advantages_without_std_is_dr_grpo():
    scores = torch.tensor([2.0, 0.0, 1.0, 5.0, 5.0, 8.0])
    adv = group_advantages(scores, group_size=3, scale_rewards=False)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, 0.0, -1.0, -1.0, 2.0]))


def test_leave_one_out_baseline():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])
    adv = leave_one_out_advantages(rewards, k=4)
    # group 1: baselines 11/3, 10/3, 3, 2; group 2: 4/3, 4/3, 4/3, 0
    want = [1 - 11 / 3, 2 - 10 / 3, 0.0, 4.0, -4 / 3, -4 / 3, -4 / 3, 4.0]
    torch.testing.assert_close(adv, torch.tensor(want))
    # the identity R_i - mean_{j != i} R_j = k / (k - 1) (R_i - mean R)
    r = rewards.reshape(2, 4)
    torch.testing.assert_close(adv, (4 / 3 * (r - r.mean(1, keepdim=True))).reshape(-1))


@pytest.mark.parametrize("fn", [lambda s: group_advantages(s, 1), lambda s: leave_one_out_advantages(s, 1)])
def test_group_of_one_is_refused(fn):
    with pytest.raises(ValueError, match=">= 2"):
        fn(torch.tensor([1.0, 2.0]))


MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize("norm, want", [("sequence", (-1 + 3) / 2), ("token", (-1 - 1 + 3) / 3), ("constant", 1 / 6)])
def test_grpo_loss_normalisations_at_ratio_one(norm, want):
    lp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -7.0, -7.0]])
    adv = torch.tensor([1.0, -3.0])
    loss = grpo_loss(lp, lp.clone(), adv, MASK, cliprange=0.2, loss_norm=norm, max_new_tokens=3)
    assert float(loss) == pytest.approx(want)


def test_grpo_gradient_is_minus_advantage_over_length_and_zero_after_eos():
    lp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -7.0, -7.0]], requires_grad=True)
    adv = torch.tensor([1.0, -3.0])
    grpo_loss(lp, lp.detach(), adv, MASK, cliprange=0.2).backward()
    # d/dlogp of mean_i (1/|o_i|) sum_t -A_i r_it at r = 1: -A_i / (n |o_i|); masked tokens: 0
    torch.testing.assert_close(lp.grad, torch.tensor([[-0.25, -0.25, 0.0], [1.5, 0.0, 0.0]]))


def test_clipped_surrogate_closed_form_and_gradient():
    old = torch.zeros(4)
    lp = torch.log(torch.tensor([1.5, 0.5, 1.5, 0.5])).requires_grad_(True)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    out = clipped_surrogate(lp, old, adv, cliprange=0.2)
    # A > 0: min(r, 1.2) counts; A < 0: max(r, 0.8) counts
    torch.testing.assert_close(out, torch.tensor([-1.2, -0.5, 1.5, 0.8]))
    out.sum().backward()
    # clipped terms have no gradient; unclipped: d(-A r)/dlogp = -A r
    torch.testing.assert_close(lp.grad, torch.tensor([0.0, -0.5, 1.5, 0.0]))


def test_grpo_kl_term_adds_beta_k3_per_token():
    lp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -7.0, -7.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, 0.0, 0.0]])
    kl = sampled_kl(lp, ref, "k3")
    # k3 = ref/pi - log(ref/pi) - 1
    want_kl = torch.exp(ref - lp) - (ref - lp) - 1
    torch.testing.assert_close(kl, want_kl)
    adv = torch.zeros(2)
    loss = grpo_loss(lp, lp, adv, MASK, 0.2, "sequence", 3, kl=kl, beta=0.5)
    want = 0.5 * ((want_kl[0, 0] + want_kl[0, 1]) / 2 + want_kl[1, 0]) / 2
    assert float(loss) == pytest.approx(float(want))


def test_rloo_loss_is_sequence_reinforce():
    seq = torch.tensor([-3.0, -1.0, -2.0], requires_grad=True)
    adv = torch.tensor([2.0, -1.0, 0.5])
    loss = rloo_loss(seq, seq.detach(), adv, cliprange=None)
    assert float(loss.detach()) == pytest.approx(-(2 * -3 + -1 * -1 + 0.5 * -2) / 3)
    loss.backward()
    torch.testing.assert_close(seq.grad, -adv / 3)
    # with clipping, the first pass (ratio 1) has the same gradient as REINFORCE
    seq2 = seq.detach().clone().requires_grad_(True)
    rloo_loss(seq2, seq2.detach(), adv, cliprange=0.2).backward()
    torch.testing.assert_close(seq2.grad, -adv / 3)
    # and a ratio of e^1 with A > 0 is clipped: no gradient
    seq3 = torch.tensor([0.0], requires_grad=True)
    rloo_loss(seq3, torch.tensor([-1.0]), torch.tensor([1.0]), cliprange=0.2).backward()
    assert float(seq3.grad) == 0.0


@pytest.mark.parametrize(
    "cls, bad, match",
    [
        (GRPOConfig, dict(group_size=1), "grpo.group_size"),
        (RLOOConfig, dict(group_size=1), "rloo.group_size"),
        (GRPOConfig, dict(mini_batch_size=5), "grpo.mini_batch_size"),
        (GRPOConfig, dict(kl_estimator="k1"), "grpo.kl_estimator"),
        (GRPOConfig, dict(loss_norm="mean"), "grpo.loss_norm"),
        (RLOOConfig, dict(cliprange=0.0), "rloo.cliprange"),
        (RLOOConfig, dict(learning_rate=-1.0), "rloo.learning_rate"),
    ],
)
def test_bad_group_configs_name_the_key(cls, bad, match):
    with pytest.raises(ValueError, match=match):
        cls(**bad)
