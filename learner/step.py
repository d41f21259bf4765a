"""One MGPO/GRPO learner step over trajectory groups: advantages, old/ref logprobs, clipped updates.

The whole algorithm of a step on one screen; the optimizer (torch or DeepSpeed) is passed in.
Token-level mean over every generated token of the step (not per sample), as in the MGPO/verl setup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
        kept = torch.tensor([[bool(s.loss_mask.any()) for s in group.samples]])  # masked: no outcome
        adv = grpo_advantages(rewards, kept)
        if bool(adv.degenerate[0]):
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


@dataclass(frozen=True)
class UpdateConfig:
    """How one learner step turns its groups into optimizer updates (verl: ppo_epochs, ppo_mini_batch_size).

    `ppo_epochs` passes over the step's groups, each split into `minibatches` optimizer updates: with more
    than one update the policy moves away from the one that started the step, and the clip binds. The
    rollout's sampling `temperature` divides the logits, as the actor's sampler did (verl does the same).
    """

    ppo_epochs: int = 1
    minibatches: int = 1
    temperature: float = 1.0

    @property
    def updates(self) -> int:
        return self.ppo_epochs * self.minibatches


@torch.no_grad()
def frozen_logprobs(
    model: torch.nn.Module | None, prepared: Sequence[Prepared], temperature: float
) -> list[torch.Tensor | None]:
    """Logprobs under a model that does not train in this step (the pre-update policy, or the reference)."""
    if model is None:
        return [None] * len(prepared)
    return [
        token_stats(model, p.batch.inputs, p.batch.loss_mask, False, temperature).logprobs for p in prepared
    ]


def mgpo_step(
    model: torch.nn.Module,
    reference: torch.nn.Module | None,
    groups: Sequence[TrajectoryGroup],
    processor: object,
    store: ImageStore,
    config: LossConfig,
    update: UpdateConfig,
    backward: Callable[[torch.Tensor], None],
    optimizer_step: Callable[[], float],
) -> StepStats:
    """`update.updates` optimizer updates over the groups with signal (fewer when fewer groups carry it);
    the stats are their means."""
    prepared, degenerate = prepare(groups, processor, store)
    rewards = [s.reward for g in groups for s in g.samples]
    reward = sum(rewards) / max(1, len(rewards))
    if not prepared:
        return StepStats(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0, len(groups), degenerate, reward)
    model.eval()  # no dropout: old logprobs must be the same function as the trained ones
    # With one update the policy the update starts from IS the one being trained: its log-probs are the
    # current ones, detached, and the extra forward pass is skipped. With several, they are fixed first.
    old = frozen_logprobs(model if update.updates > 1 else None, prepared, update.temperature)
    ref = frozen_logprobs(reference if config.kl_coef > 0 else None, prepared, update.temperature)
    items = list(zip(prepared, old, ref, strict=True))
    sums, updates = torch.zeros(7, device=next(model.parameters()).device), 0
    for _epoch in range(update.ppo_epochs):
        for part in _split(items, update.minibatches):  # fewer parts when fewer groups carry signal
            sums[:6] += _accumulate(model, part, config, update.temperature, backward)
            sums[6] += optimizer_step()
            updates += 1
    loss, policy, kl, entropy, clip_fraction, is_weight, grad_norm = (sums / updates).tolist()
    total = sum(p.tokens for p in prepared)
    return StepStats(
        loss, policy, kl, entropy, clip_fraction, is_weight, grad_norm, total, len(groups), degenerate, reward
    )


def _split(items: list, parts: int) -> list[list]:
    """`items` in `parts` contiguous near-equal chunks (fewer when there are fewer items)."""
    size = -(-len(items) // parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


def _accumulate(
    model: torch.nn.Module,
    part: list[tuple[Prepared, torch.Tensor | None, torch.Tensor | None]],
    config: LossConfig,
    temperature: float,
    backward: Callable[[torch.Tensor], None],
) -> torch.Tensor:
    """Backward of one update's groups, each weighted by its share of the update's tokens (a token mean
    over the update, not a mean of group means); returns the update's loss statistics [6]."""
    total = sum(p.tokens for p, _, _ in part)
    device = next(model.parameters()).device
    sums = torch.zeros(6, device=device)
    for p, old_lp, ref_lp in part:
        stats = token_stats(model, p.batch.inputs, p.batch.loss_mask, True, temperature)
        out = policy_loss(
            stats.logprobs,
            stats.logprobs.detach() if old_lp is None else old_lp,
            p.behaviour.to(device),
            p.advantages.to(device),
            torch.ones_like(stats.logprobs, dtype=torch.bool),
            stats.entropy,
            ref_lp,
            config,
        )
        share = p.tokens / total
        backward(out.loss * share)
        sums += share * torch.stack(
            [out.loss.detach(), out.policy, out.kl, out.entropy, out.clip_fraction, out.is_weight]
        )
    return sums


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
