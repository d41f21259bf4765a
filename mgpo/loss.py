"""The MGPO / GRPO policy loss, token-level, on model-generated tokens only.

Paper settings (arXiv 2507.05920): PPO-clip 0.2, KL to a frozen reference with the low-variance estimator
(coef 0.01), entropy bonus 0.001. Off-policy groups (made by an older policy version) are corrected with a
truncated importance weight between the behaviour policy (the actor's logprobs) and the policy the update
starts from (truncated IS, as in verl's TIS / IMPALA's rho-bar).

All tensors are [B, T] over the positions that carry loss (see learner/logprobs.py); `mask` marks real
generated tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class LossConfig:
    clip: float = 0.2
    kl_coef: float = 0.01  # 0 disables the reference model entirely
    entropy_coef: float = 0.001
    is_cap: float = 2.0  # truncation of the behaviour -> old-policy importance weight
    scale_rewards: bool = True  # GRPO's division of a group's advantages by its reward std (False: Dr. GRPO)
    decision_weight: float = 1.0  # the weight of each turn's first generated token (mgpo.masks.turn_starts)


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # scalar, to minimise
    policy: torch.Tensor  # scalar: the clipped surrogate part
    kl: torch.Tensor  # scalar: mean low-variance KL to the reference (0 when disabled)
    entropy: torch.Tensor  # scalar: mean token entropy
    clip_fraction: torch.Tensor  # scalar: share of tokens where the clip was active
    is_weight: torch.Tensor  # scalar: mean truncated importance weight


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the True positions of `mask` (token-level: every generated token counts once)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def low_var_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || ref): exp(r) - r - 1 with r = ref - policy; >= 0, low variance.

    Clamped to [-10, 10] as verl does: one token with a huge gap must not dominate a batch.
    """
    r = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    return (torch.exp(r) - r - 1.0).clamp(-10.0, 10.0)


def truncated_is_weight(
    old_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, cap: float
) -> torch.Tensor:
    """min(pi_old / pi_behaviour, cap) per token, no gradient: corrects rollouts from older versions."""
    return torch.exp(old_logprobs - behaviour_logprobs).clamp(max=cap).detach()


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    entropy: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    config: LossConfig,
) -> PolicyLoss:
    """Clipped surrogate x truncated IS weight, + kl_coef * KL(ref), - entropy_coef * entropy.

    logprobs: [B, T] current policy (with grad); old_logprobs: [B, T] the policy the update started from
    (recomputed by the learner, no grad); behaviour_logprobs: [B, T] from the actor; advantages: [B, 1] or
    [B, T]; mask: [B, T] bool; entropy: [B, T] token entropy of the current policy.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - config.clip, 1.0 + config.clip) * advantages
    weight = truncated_is_weight(old_logprobs, behaviour_logprobs, config.is_cap)
    surrogate = -torch.minimum(unclipped, clipped) * weight
    policy = masked_mean(surrogate, mask)
    # the clip binds where the clipped term is the smaller one (verl's pg_clipfrac)
    clip_fraction = masked_mean((clipped < unclipped).to(logprobs.dtype), mask).detach()
    mean_entropy = masked_mean(entropy, mask)
    if ref_logprobs is not None and config.kl_coef > 0:
        kl = masked_mean(low_var_kl(logprobs, ref_logprobs), mask)
    else:
        kl = torch.zeros((), dtype=logprobs.dtype)
    loss = policy + config.kl_coef * kl - config.entropy_coef * mean_entropy
    return PolicyLoss(
        loss, policy.detach(), kl.detach(), mean_entropy.detach(), clip_fraction, masked_mean(weight, mask)
    )
