import pytest
import torch

from mgpo.advantages import grpo_advantages


def test_grpo_advantages_hand_worked_group():
    # rewards [1,0,0,0]: mean 0.25, sample std sqrt((0.75^2 + 3*0.25^2)/3) = sqrt(0.25) = 0.5
    out = grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert out.advantages[0].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-5)
    assert out.degenerate.tolist() == [False]


def test_grpo_advantages_all_equal_group_is_zero_and_flagged():
    out = grpo_advantages(torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]))
    assert out.advantages[0].tolist() == [0.0, 0.0, 0.0]
    assert out.degenerate.tolist() == [True, False]
    assert out.advantages[1].sum().item() == pytest.approx(0.0, abs=1e-6)


def test_grpo_advantages_single_sample_groups_are_degenerate():
    out = grpo_advantages(torch.tensor([[1.0], [0.0]]))
    assert out.advantages.tolist() == [[0.0], [0.0]] and out.degenerate.all()


def test_grpo_advantages_rejects_a_flat_vector():
    with pytest.raises(ValueError, match="groups, n"):
        grpo_advantages(torch.tensor([1.0, 0.0]))


def test_masked_samples_are_left_out_of_the_group_statistics_and_get_no_advantage():
    # kept rewards [1, 0, 0]: mean 1/3, sample std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3) = 0.5774
    # -> advantages [1.1547, -0.5774, -0.5774]; the masked 4th (an over-length 0) is not in the baseline
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    out = grpo_advantages(rewards, kept=torch.tensor([[True, True, True, False]]))
    assert out.advantages[0].tolist() == pytest.approx([1.1547, -0.5774, -0.5774, 0.0], abs=1e-4)
    assert out.degenerate.tolist() == [False]


def test_a_group_with_fewer_than_two_kept_samples_or_equal_kept_rewards_is_degenerate():
    rewards = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    out = grpo_advantages(rewards, kept=torch.tensor([[True, False, False], [True, True, False]]))
    assert out.degenerate.tolist() == [True, True]  # one kept; and the kept two are both right
    assert out.advantages.abs().sum().item() == 0.0


def test_without_scaling_a_small_bonus_stays_small_where_scaling_makes_it_full_size():
    # all four right, two of them without a crop (direct_bonus 0.1): rewards [1.1, 1.1, 1, 1], mean 1.05
    rewards = torch.tensor([[1.1, 1.1, 1.0, 1.0]])
    # scaled: std sqrt(4 * 0.05^2 / 3) = 0.0577 -> +-0.866, as large as a right answer against a wrong one
    assert grpo_advantages(rewards).advantages[0].tolist() == pytest.approx(
        [0.866, 0.866, -0.866, -0.866], abs=1e-3
    )
    unscaled = grpo_advantages(rewards, scale=False)
    assert unscaled.advantages[0].tolist() == pytest.approx([0.05, 0.05, -0.05, -0.05], abs=1e-6)
    # a right answer against a wrong one keeps its size in reward units
    assert grpo_advantages(torch.tensor([[1.0, 0.0]]), scale=False).advantages[0].tolist() == [0.5, -0.5]
    masked = grpo_advantages(rewards, torch.tensor([[True, True, True, False]]), scale=False)
    assert masked.advantages[0].tolist() == pytest.approx([1 / 30, 1 / 30, -2 / 30, 0.0], abs=1e-6)
