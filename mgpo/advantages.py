"""GRPO group-relative advantages (DeepSeekMath; MGPO uses n=8 samples per prompt)."""

from __future__ import annotations

from typing import NamedTuple

import torch

EPS = 1e-6


class GroupAdvantages(NamedTuple):
    advantages: torch.Tensor  # [groups, n]
    degenerate: torch.Tensor  # [groups] bool: all rewards equal, so the group carries no signal


def grpo_advantages(
    rewards: torch.Tensor, kept: torch.Tensor | None = None, eps: float = EPS, scale: bool = True
) -> GroupAdvantages:
    """(r - mean) / (std + eps) within each group of `rewards` [groups, n], over its `kept` samples; with
    `scale` False, r - mean (Dr. GRPO, arXiv 2503.20783).

    std is the sample standard deviation (Bessel-corrected), as in verl's and TRL's GRPO. `kept` [groups, n]
    bool marks the samples that carry loss: a masked sample (over-turn, over-length) is left out of its
    group's mean and std and gets advantage 0, since masking means "no outcome", and its reward in the
    baseline would still push the others (a masked 0 would lift every kept sample). A group with fewer than
    two kept samples, or whose kept rewards are all equal, gets zero advantage and is flagged, so the
    learner can count it instead of dividing 0 by eps.

    Dividing by the std makes a group's spread unit size whatever it was: where every sample is right and
    the rewards differ only by a small bonus (multi-turn's direct_bonus), the bonus becomes a full-size
    advantage (measured on the looks set: README, Results). Without the division it stays its own size.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [groups, n], got shape {tuple(rewards.shape)}")
    rewards = rewards.to(torch.float32)
    kept = torch.ones_like(rewards, dtype=torch.bool) if kept is None else kept.to(torch.bool)
    weight = kept.to(torch.float32)
    count = weight.sum(dim=1, keepdim=True)  # [groups, 1]
    mean = (rewards * weight).sum(dim=1, keepdim=True) / count.clamp(min=1.0)
    var = ((rewards - mean) ** 2 * weight).sum(dim=1, keepdim=True) / (count - 1.0).clamp(min=1.0)
    highest = torch.where(kept, rewards, torch.full_like(rewards, -torch.inf)).amax(dim=1)
    lowest = torch.where(kept, rewards, torch.full_like(rewards, torch.inf)).amin(dim=1)
    degenerate = (count[:, 0] < 2) | (highest == lowest)
    spread = var.sqrt() + eps if scale else torch.ones_like(var)
    advantages = (rewards - mean) / spread * weight
    advantages = torch.where(degenerate[:, None], torch.zeros_like(advantages), advantages)
    return GroupAdvantages(advantages, degenerate)
