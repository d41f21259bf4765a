import math

import pytest
import torch

from mgpo.loss import LossConfig, low_var_kl, masked_mean, policy_loss, truncated_is_weight

NO_EXTRAS = LossConfig(clip=0.2, kl_coef=0.0, entropy_coef=0.0, is_cap=2.0)


def _loss(logprobs, old, behaviour, advantages, mask, config=NO_EXTRAS, ref=None, entropy=None):
    logprobs = torch.tensor(logprobs, requires_grad=True)
    entropy = torch.zeros_like(logprobs) if entropy is None else torch.tensor(entropy)
    ref = None if ref is None else torch.tensor(ref)
    out = policy_loss(
        logprobs,
        torch.tensor(old),
        torch.tensor(behaviour),
        torch.tensor(advantages),
        torch.tensor(mask),
        entropy,
        ref,
        config,
    )
    return out, logprobs


def test_on_policy_loss_is_minus_the_mean_advantage_and_its_gradient():
    # ratio 1 everywhere: surrogate = -A per token; tokens: A=+1, +1, -1 -> mean -(1+1-1)/3 = -1/3
    out, lp = _loss(
        [[-1.0, -2.0, -0.5]],
        [[-1.0, -2.0, -0.5]],
        [[-1.0, -2.0, -0.5]],
        [[1.0, 1.0, -1.0]],
        [[True, True, True]],
    )
    assert out.loss.item() == pytest.approx(-1 / 3)
    out.loss.backward()
    # d(-ratio*A)/dlogprob = -A at ratio 1, divided by 3 tokens
    assert lp.grad[0].tolist() == pytest.approx([-1 / 3, -1 / 3, 1 / 3])
    assert out.clip_fraction.item() == 0.0 and out.is_weight.item() == pytest.approx(1.0)


def test_clip_binds_only_where_it_should():
    # ratio = e^0.5 = 1.6487 on both tokens. A=+1: min(1.6487, 1.2) = 1.2 (clip binds);
    # A=-1: min(-1.6487, -1.2) = -1.6487 (unclipped taken). loss = mean(-1.2, +1.6487) = 0.22436
    out, lp = _loss([[0.0, 0.0]], [[-0.5, -0.5]], [[-0.5, -0.5]], [[1.0, -1.0]], [[True, True]])
    assert out.loss.item() == pytest.approx((-1.2 + math.exp(0.5)) / 2, rel=1e-5)
    assert out.clip_fraction.item() == pytest.approx(0.5)
    out.loss.backward()
    assert lp.grad[0, 0].item() == 0.0  # clipped: no gradient
    assert lp.grad[0, 1].item() == pytest.approx(math.exp(0.5) / 2, rel=1e-5)


def test_masked_tokens_carry_nothing():
    out, lp = _loss([[-1.0, -9.0]], [[-1.0, -1.0]], [[-1.0, -1.0]], [[2.0, 5.0]], [[True, False]])
    assert out.loss.item() == pytest.approx(-2.0)
    out.loss.backward()
    assert lp.grad[0, 1].item() == 0.0


def test_truncated_importance_weight_caps_stale_rollouts():
    # pi_old / pi_behaviour = e^{log 3} = 3 -> capped at 2; and 0.5 stays 0.5
    w = truncated_is_weight(torch.tensor([math.log(3.0), math.log(0.5)]), torch.tensor([0.0, 0.0]), cap=2.0)
    assert w.tolist() == pytest.approx([2.0, 0.5])
    out, _ = _loss([[0.0]], [[0.0]], [[-math.log(3.0)]], [[1.0]], [[True]])
    assert out.loss.item() == pytest.approx(-2.0) and out.is_weight.item() == pytest.approx(2.0)


def test_low_var_kl_hand_worked_value_and_zero_at_equality():
    # policy p=0.5, ref q=0.25: r = log(q/p) = log 0.5; e^r - r - 1 = 0.5 + 0.693147 - 1 = 0.193147
    kl = low_var_kl(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert kl.item() == pytest.approx(0.5 + math.log(2.0) - 1.0, rel=1e-6)
    assert low_var_kl(torch.tensor([-1.3]), torch.tensor([-1.3])).item() == 0.0


def test_kl_and_entropy_terms_use_their_coefficients_and_kl_zero_disables_reference():
    config = LossConfig(clip=0.2, kl_coef=0.1, entropy_coef=0.01, is_cap=2.0)
    ref = [[math.log(0.25)]]
    out, _ = _loss(
        [[math.log(0.5)]],
        [[math.log(0.5)]],
        [[math.log(0.5)]],
        [[0.0]],
        [[True]],
        config,
        ref=ref,
        entropy=[[2.0]],
    )
    # policy 0 (A=0); + 0.1 * 0.193147 - 0.01 * 2.0
    assert out.loss.item() == pytest.approx(0.1 * (0.5 + math.log(2.0) - 1.0) - 0.02, rel=1e-5)
    off, _ = _loss(
        [[math.log(0.5)]],
        [[math.log(0.5)]],
        [[math.log(0.5)]],
        [[0.0]],
        [[True]],
        LossConfig(kl_coef=0.0, entropy_coef=0.0),
        ref=ref,
    )
    assert off.kl.item() == 0.0 and off.loss.item() == 0.0


def test_masked_mean_of_an_empty_mask_is_zero_not_nan():
    assert masked_mean(torch.tensor([1.0, 2.0]), torch.tensor([False, False])).item() == 0.0
