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
