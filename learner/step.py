"""One MGPO/GRPO learner step over trajectory groups: advantages, old/ref logprobs, clipped update.

The whole algorithm of a step on one screen; the optimizer (torch or DeepSpeed) is passed in.
Token-level mean over every generated token of the step (not per sample), as in the MGPO/verl setup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from learner.logprobs import flat, group_batch, per_token, token_stats
from mgpo.advantages import grpo_advantages
from mgpo.images import ImageStore
from mgpo.loss import LossConfig, policy_loss
from mgpo.models.inputs import Batch
from mgpo.records import TrajectoryGroup


class Prepared(NamedTuple):
    batch: Batch
    advantages: torch.Tensor  # [N] per loss token
    behaviour: torch.Tensor  # [N] actor logprobs
    tokens: int


class StepStats(NamedTuple):
    loss: float
    policy: float
    kl: float
    entropy: float
    clip_fraction: float
    is_weight: float
    grad_norm: float
    tokens: int
    groups: int
    degenerate_groups: int  # all rewards equal: no signal, skipped
    reward: float


def prepare(
    groups: Sequence[TrajectoryGroup], processor: object, store: ImageStore
) -> tuple[list[Prepared], int]:
    """Batches of the groups that carry signal; returns them and the number of degenerate groups skipped."""
    prepared, degenerate = [], 0
    for group in groups:
        rewards = torch.tensor([[s.reward for s in group.samples]])
        adv = grpo_advantages(rewards)
        if bool(adv.degenerate[0]) or not any(s.loss_mask.any() for s in group.samples):
            degenerate += 1
            continue
        batch = group_batch(processor, group, store)
        tokens = int(batch.loss_mask[:, 1:].sum())
        prepared.append(
            Prepared(
                batch,
                per_token(adv.advantages[0].tolist(), batch.loss_mask),
                flat(batch.logprobs, batch.loss_mask),
                tokens,
            )
        )
    return prepared, degenerate


@torch.no_grad()
def frozen_logprobs(model: torch.nn.Module | None, prepared: Sequence[Prepared]) -> list[torch.Tensor | None]:
    """Logprobs under a model that does not train in this step (the pre-update policy, or the reference)."""
    if model is None:
        return [None] * len(prepared)
    return [
        token_stats(model, p.batch.inputs, p.batch.loss_mask, with_entropy=False).logprobs for p in prepared
    ]


def mgpo_step(
    model: torch.nn.Module,
    reference: torch.nn.Module | None,
    groups: Sequence[TrajectoryGroup],
    processor: object,
    store: ImageStore,
    config: LossConfig,
    backward: Callable[[torch.Tensor], None],
    optimizer_step: Callable[[], float],
) -> StepStats:
    """Accumulate the loss of every group with signal, then one optimizer step (returns the grad norm)."""
    prepared, degenerate = prepare(groups, processor, store)
    rewards = [s.reward for g in groups for s in g.samples]
    reward = sum(rewards) / max(1, len(rewards))
    if not prepared:
        return StepStats(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0, len(groups), degenerate, reward)
    model.eval()  # no dropout: old logprobs must be the same function as the trained ones
    old = frozen_logprobs(model, prepared)
    ref = frozen_logprobs(reference if config.kl_coef > 0 else None, prepared)
    total = sum(p.tokens for p in prepared)
    device = next(model.parameters()).device
    sums = torch.zeros(6, device=device)
    for p, old_lp, ref_lp in zip(prepared, old, ref, strict=True):
        stats = token_stats(model, p.batch.inputs, p.batch.loss_mask)
        mask = torch.ones_like(stats.logprobs, dtype=torch.bool)
        out = policy_loss(
            stats.logprobs,
            old_lp,
            p.behaviour.to(device),
            p.advantages.to(device),
            mask,
            stats.entropy,
            ref_lp,
            config,
        )
        share = p.tokens / total  # token-mean over the whole step, not a mean of group means
        backward(out.loss * share)
        sums += share * torch.stack(
            [out.loss.detach(), out.policy, out.kl, out.entropy, out.clip_fraction, out.is_weight]
        )
    grad_norm = optimizer_step()
    loss, policy, kl, entropy, clip_fraction, is_weight = sums.tolist()
    return StepStats(
        loss, policy, kl, entropy, clip_fraction, is_weight, grad_norm, total, len(groups), degenerate, reward
    )


def torch_optimizer_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float
) -> Callable[[], float]:
    """The plain-torch optimizer step (DeepSpeed's engine provides its own)."""

    def step() -> float:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(norm)

    return step
