"""GRPO group-relative advantages (DeepSeekMath; MGPO uses n=8 samples per prompt)."""

from __future__ import annotations

from typing import NamedTuple

import torch

EPS = 1e-6


class GroupAdvantages(NamedTuple):
    advantages: torch.Tensor  # [groups, n]
    degenerate: torch.Tensor  # [groups] bool: all rewards equal, so the group carries no signal


def grpo_advantages(rewards: torch.Tensor, eps: float = EPS) -> GroupAdvantages:
    """(r - mean) / (std + eps) within each group of `rewards` [groups, n].

    std is the sample standard deviation (Bessel-corrected), as in verl's and TRL's GRPO. A group whose
    rewards are all equal (all right or all wrong, or n == 1) gets zero advantage and is flagged, so the
    learner can count it instead of dividing 0 by eps.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [groups, n], got shape {tuple(rewards.shape)}")
    rewards = rewards.to(torch.float32)
    mean = rewards.mean(dim=1, keepdim=True)
    degenerate = (rewards == rewards[:, :1]).all(dim=1)
    std = rewards.std(dim=1, keepdim=True) if rewards.shape[1] > 1 else torch.zeros_like(mean)
    advantages = (rewards - mean) / (std + eps)
    advantages = torch.where(degenerate[:, None], torch.zeros_like(advantages), advantages)
    return GroupAdvantages(advantages, degenerate)
