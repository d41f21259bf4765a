"""One MGPO/GRPO learner step over trajectory groups: advantages, old/ref logprobs, clipped updates.

The whole algorithm of a step on one screen; the optimizer (torch or DeepSpeed) is passed in.
Token-level mean over every generated token of the step (not per sample), as in the MGPO/verl setup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch

from learner.logprobs import flat, group_batch, per_token, split_rows, token_stats
from mgpo.advantages import grpo_advantages
from mgpo.images import ImageStore
from mgpo.loss import LossConfig, policy_loss
from mgpo.masks import decision_weights
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


class Signal(NamedTuple):
    """A group whose rewards differ (one that carries a learning signal), before its batch is built."""

    group: TrajectoryGroup
    advantages: list[float]  # per sample
    tokens: int  # loss tokens: the group's weight in a token mean


def with_signal(groups: Sequence[TrajectoryGroup], scale_rewards: bool = True) -> tuple[list[Signal], int]:
    """The groups that carry signal, from their records alone (cheap: no pixels, no tokens expanded);
    returns them and the number of degenerate groups skipped. `scale_rewards`: LossConfig's."""
    kept_groups, degenerate = [], 0
    for group in groups:
        rewards = torch.tensor([[s.reward for s in group.samples]])
        kept = torch.tensor([[bool(s.loss_mask.any()) for s in group.samples]])  # masked: no outcome
        adv = grpo_advantages(rewards, kept, scale=scale_rewards)
        if bool(adv.degenerate[0]):
            degenerate += 1
            continue
        # position 0 predicts nothing (the batch's loss_mask[:, 1:]); image pads are never loss tokens
        tokens = sum(int(s.loss_mask[1:].sum()) for s in group.samples)
        kept_groups.append(Signal(group, adv.advantages[0].tolist(), tokens))
    return kept_groups, degenerate


def prepare_one(
    signal: Signal, processor: object, store: ImageStore, decision_weight: float = 1.0
) -> Prepared:
    """The training batch of one group with signal: pixels, expanded tokens, per-token advantages, each
    turn's first token's times `decision_weight` (LossConfig's)."""
    batch = group_batch(processor, signal.group, store)
    advantages = per_token(signal.advantages, batch.loss_mask)
    if decision_weight != 1.0:
        advantages = advantages * flat(decision_weights(batch.loss_mask, decision_weight), batch.loss_mask)
    return Prepared(
        batch,
        advantages,
        flat(batch.logprobs, batch.loss_mask),
        signal.tokens,
    )


def prepare(
    groups: Sequence[TrajectoryGroup], processor: object, store: ImageStore
) -> tuple[list[Prepared], int]:
    """Batches of the groups that carry signal; returns them and the number of degenerate groups skipped."""
    signal, degenerate = with_signal(groups)
    return [prepare_one(s, processor, store) for s in signal], degenerate


class Reference(NamedTuple):
    """The KL anchor: a frozen model, or (LoRA) the policy itself with its adapters off inside `context`."""

    model: torch.nn.Module
    context: Callable[[], AbstractContextManager[object]] = nullcontext


@dataclass(frozen=True)
class Ranks:
    """This process's place among the learner's data-parallel ranks. Each rank trains on its share of every
    update's groups; the engine averages the ranks' gradients; `all_reduce` sums a tensor over the ranks."""

    rank: int = 0
    world_size: int = 1
    all_reduce: Callable[[torch.Tensor], None] = lambda tensor: None


def shard(part: Sequence[int], rank: int, world_size: int) -> list[tuple[int, bool]]:
    """This rank's items of one update, as (index, counts): round robin, padded to the same length on every
    rank with items that count for nothing. Every rank must run as many forward and backward passes as the
    others (ZeRO-2/3 communicate inside them), even a rank with no group of its own in this update."""
    mine = list(part[rank::world_size])
    length = -(-len(part) // world_size)
    filler = mine[-1] if mine else part[rank % len(part)]
    return [(i, True) for i in mine] + [(filler, False)] * (length - len(mine))


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
    gradient_checkpointing: bool = False  # recompute activations in backward (set on the model as well)
    micro_batch: int = 0  # samples per forward/backward pass; 0: a whole group (its n samples) at once

    @property
    def updates(self) -> int:
        return self.ppo_epochs * self.minibatches


@torch.no_grad()
def frozen_logprobs(
    model: torch.nn.Module | None, prepared: dict[int, Prepared], update: UpdateConfig
) -> dict[int, torch.Tensor | None]:
    """Logprobs under a model that does not train in this step (the pre-update policy, or the reference)."""
    if model is None:
        return dict.fromkeys(prepared)
    out = {}
    for i, p in prepared.items():
        parts = [
            token_stats(model, b.inputs, b.loss_mask, False, update.temperature).logprobs
            for b, _ in _chunks(p, update)
        ]
        out[i] = torch.cat(parts)
    return out


def _chunks(p: Prepared, update: UpdateConfig) -> list[tuple[Batch, slice]]:
    rows = p.batch.loss_mask.shape[0]
    return split_rows(p.batch, update.micro_batch or rows)


def mgpo_step(
    model: torch.nn.Module,
    reference: Reference | None,
    groups: Sequence[TrajectoryGroup],
    processor: object,
    store: ImageStore,
    config: LossConfig,
    update: UpdateConfig,
    backward: Callable[[torch.Tensor], None],
    optimizer_step: Callable[[], float],
    ranks: Ranks = Ranks(),
    ready: Mapping[str, Prepared] | None = None,
) -> StepStats:
    """`update.updates` optimizer updates over the groups with signal (fewer when fewer groups carry it);
    the stats are their means. With several ranks every rank gets the same `groups` and builds the batches
    of its own share only. `ready`: batches already built (by group id), e.g. while the learner waited."""
    signal, degenerate = with_signal(groups, config.scale_rewards)
    rewards = [s.reward for g in groups for s in g.samples]
    reward = sum(rewards) / max(1, len(rewards))
    if not signal:
        return StepStats(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0, len(groups), degenerate, reward)
    splits = _split(list(range(len(signal))), update.minibatches)  # fewer when fewer groups carry signal
    parts = [shard(split, ranks.rank, ranks.world_size) for split in splits]
    mine = sorted({i for part in parts for i, _ in part})  # this rank builds only its own groups' batches
    ready = ready or {}
    prepared = {
        i: ready.get(signal[i].group.id) or prepare_one(signal[i], processor, store, config.decision_weight)
        for i in mine
    }
    model.eval()  # no dropout: old logprobs must be the same function as the trained ones
    # With one update the policy the update starts from IS the one being trained: its log-probs are the
    # current ones, detached, and the extra forward pass is skipped. With several, they are fixed first.
    old = frozen_logprobs(model if update.updates > 1 else None, prepared, update)
    ref = dict.fromkeys(prepared)
    if reference is not None and config.kl_coef > 0:
        with reference.context():
            ref = frozen_logprobs(reference.model, prepared, update)
    sums, updates = torch.zeros(7, device=next(model.parameters()).device), 0
    for _epoch in range(update.ppo_epochs):
        for split, part in zip(splits, parts, strict=True):
            total = sum(signal[i].tokens for i in split)
            # a group's share is its part of the update's tokens (a token mean over the update, not a mean
            # of group means); a filler counts for nothing
            entries = [
                (prepared[i], old[i], ref[i], signal[i].tokens / total if counts else 0.0)
                for i, counts in part
            ]
            # HF recomputes activations only in training mode; its Qwen2.5-VL has no dropout to switch on
            # (the learner refuses gradient checkpointing on a model with dropout)
            model.train(update.gradient_checkpointing)
            sums[:6] += _accumulate(model, entries, ranks.world_size, config, update, backward)
            model.eval()
            sums[6] += optimizer_step()
            updates += 1
    ranks.all_reduce(sums[:6])  # each rank's sums are its groups' shares of every update
    loss, policy, kl, entropy, clip_fraction, is_weight, grad_norm = (sums / updates).tolist()
    total = sum(s.tokens for s in signal)
    return StepStats(
        loss, policy, kl, entropy, clip_fraction, is_weight, grad_norm, total, len(groups), degenerate, reward
    )


def _split(items: list, parts: int) -> list[list]:
    """`items` in `parts` contiguous near-equal chunks (fewer when there are fewer items)."""
    size = -(-len(items) // parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


def _accumulate(
    model: torch.nn.Module,
    entries: list[tuple[Prepared, torch.Tensor | None, torch.Tensor | None, float]],
    world_size: int,
    config: LossConfig,
    update: UpdateConfig,
    backward: Callable[[torch.Tensor], None],
) -> torch.Tensor:
    """Backward of this rank's groups of one update, micro-batch by micro-batch, each loss times its share of
    the update's tokens; returns this rank's part of the update's loss statistics [6] (their sum over the
    ranks is the update's)."""
    device = next(model.parameters()).device
    sums = torch.zeros(6, device=device)
    for p, old_lp, ref_lp, share in entries:
        for batch, part in _chunks(p, update):
            weight = share * (part.stop - part.start) / max(1, p.tokens)  # the chunk's share of the update
            stats = token_stats(model, batch.inputs, batch.loss_mask, True, update.temperature)
            out = policy_loss(
                stats.logprobs,
                stats.logprobs.detach() if old_lp is None else old_lp[part],
                p.behaviour[part].to(device),
                p.advantages[part].to(device),
                torch.ones_like(stats.logprobs, dtype=torch.bool),
                stats.entropy,
                None if ref_lp is None else ref_lp[part],
                config,
            )
            backward(out.loss * (weight * world_size))  # the engine averages the ranks' gradients
            sums += weight * torch.stack(
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
