"""DPO / IPO: losses and gradients on hand-made numbers, sequence log-probs, pair files, trainer."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from t5lab.errors import T5LabError
from t5lab.rl.dpo import DPOConfig, DPOTrainer, PairBatch, dpo_loss, read_pairs, sequence_logprobs
from t5lab.rl.sampler import score_responses
from tests.rl.test_group_trainer import VARIANTS, _lm


def _leaves(*values):
    return [torch.tensor([v], requires_grad=True) for v in values]


def test_dpo_loss_and_gradient_closed_form():
    pc, pr, rc, rr = _leaves(-1.0, -3.0, -2.0, -2.0)
    loss, stats = dpo_loss(pc, pr, rc.detach(), rr.detach(), beta=0.5)
    # h = (-1 + 2) - (-3 + 2) = 2; L = -log sigmoid(beta h) = log(1 + e^-1)
    assert float(loss.detach()) == pytest.approx(math.log1p(math.exp(-1.0)))
    loss.backward()
    g = 0.5 / (1 + math.exp(1.0))  # beta * sigmoid(-beta h)
    assert float(pc.grad) == pytest.approx(-g) and float(pr.grad) == pytest.approx(g)
    assert float(stats["reward_chosen"]) == pytest.approx(0.5)
    assert float(stats["reward_rejected"]) == pytest.approx(-0.5)
    assert float(stats["reward_margin"]) == pytest.approx(1.0)
    assert float(stats["reward_accuracy"]) == 1.0


def test_ipo_loss_and_gradient_closed_form():
    pc, pr, rc, rr = _leaves(-1.0, -3.0, -2.0, -2.0)
    loss, _ = dpo_loss(pc, pr, rc.detach(), rr.detach(), beta=0.5, loss_type="ipo")
    assert float(loss.detach()) == pytest.approx((2.0 - 1.0) ** 2)  # (h - 1/(2 beta))^2
    loss.backward()
    assert float(pc.grad) == pytest.approx(2.0) and float(pr.grad) == pytest.approx(-2.0)


def test_dpo_loss_is_a_batch_mean_and_accuracy_counts_pairs():
    pc = torch.tensor([-1.0, -5.0])
    pr = torch.tensor([-3.0, -1.0])
    ref = torch.tensor([-2.0, -2.0])
    loss, stats = dpo_loss(pc, pr, ref, ref, beta=1.0)
    h = torch.tensor([2.0, -4.0])
    assert float(loss) == pytest.approx(float(-torch.nn.functional.logsigmoid(h).mean()))
    assert float(stats["reward_accuracy"]) == 0.5


def _batch(vocab: int = 64) -> PairBatch:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    chosen = torch.randint(3, vocab, (3, 4), generator=g)
    chosen_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    rejected = torch.randint(3, vocab, (3, 6), generator=g)
    rejected_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    return PairBatch(ids * mask, mask, chosen * chosen_mask, chosen_mask, rejected * rejected_mask, rejected_mask)


@pytest.mark.parametrize("kind", VARIANTS)
def test_sequence_logprobs_are_sums_over_real_tokens(tiny_t5, kind):
    model = _lm(kind, tiny_t5)
    b = _batch()
    chosen, rejected = sequence_logprobs(model, b)
    want_c = score_responses(model, b.input_ids, b.attention_mask, b.chosen, b.chosen_mask).sum(1)
    want_r = score_responses(model, b.input_ids, b.attention_mask, b.rejected, b.rejected_mask).sum(1)
    torch.testing.assert_close(chosen, want_c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rejected, want_r, atol=1e-5, rtol=1e-5)
    mean_c, _ = sequence_logprobs(model, b, length_normalize=True)
    torch.testing.assert_close(mean_c, want_c / b.chosen_mask.sum(1), atol=1e-5, rtol=1e-5)
    # tokens after the end of a response never count
    junk = copy.deepcopy(b)
    junk.chosen = torch.where(b.chosen_mask.bool(), b.chosen, 7)
    torch.testing.assert_close(sequence_logprobs(model, junk)[0], chosen, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss_type, want", [("sigmoid", math.log(2.0)), ("ipo", 1 / (4 * 0.1**2))])
@pytest.mark.parametrize("kind", ["t5", "decoder_only", "gpt2"])
def test_first_step_from_the_reference_and_learning(tiny_t5, kind, loss_type, want):
    policy = _lm(kind, tiny_t5)
    trainer = DPOTrainer(policy, DPOConfig(loss_type=loss_type, beta=0.1, learning_rate=1e-2, batch_size=3))
    b = _batch()
    ref = trainer.reference_logprobs(copy.deepcopy(policy), b)
    first = trainer.step(b, ref)
    assert first["loss"] == pytest.approx(want, rel=1e-4)  # policy == reference: h = 0
    assert first["reward_margin"] == pytest.approx(0.0, abs=1e-5)
    for _ in range(5):
        last = trainer.step(b, ref)
    assert last["loss"] < first["loss"] and last["reward_margin"] > 0 and last["reward_accuracy"] == 1.0


def _write(tmp_path, rows):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_pairs_and_bad_files(tmp_path):
    good = {"prompt": "ab", "chosen": "ba", "rejected": "aa"}
    assert read_pairs(_write(tmp_path, [good, good])) == [good, good]
    bad_cases = [
        ([{"prompt": "ab", "chosen": "ba"}], "line 1: missing field 'rejected'"),
        ([good, {**good, "chosen": 3}], "line 2: field 'chosen' must be a string"),
        ([{**good, "prompt": " "}], "empty prompt"),
        ([], "holds no pairs"),
    ]
    for rows, message in bad_cases:
        with pytest.raises(T5LabError, match=message) as err:
            read_pairs(_write(tmp_path, rows))
        assert "\n" not in str(err.value)
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(T5LabError, match="not JSON"):
        read_pairs(tmp_path / "broken.jsonl")


@pytest.mark.parametrize("bad", [dict(loss_type="hinge"), dict(beta=0.0), dict(batch_size=0)])
def test_bad_dpo_config(bad):
    with pytest.raises(ValueError, match="dpo."):
        DPOConfig(**bad)
