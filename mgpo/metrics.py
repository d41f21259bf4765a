"""What a batch of trajectory groups says: the numbers rollouts, evaluation and the learner report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from mgpo.records import TrajectoryGroup


class RolloutSummary(NamedTuple):
    groups: int
    samples: int
    accuracy: float  # share of samples with reward 1.0 (the right answer)
    reward: float  # mean reward
    valid_grounding_ratio: float  # share of samples whose boxes all passed MGPO's validity check
    valid_grounding_lenient_ratio: float  # the same, the boxes read by the lenient rule
    turns: float  # mean turns per trajectory
    generated_tokens: int  # tokens sampled by the policy, masked samples included
    masked: int  # samples masked out of the loss (over turns / over length)
    # multi-image grounding samples only (None when the batch has none)
    mean_iou: float | None = None
    iou_accuracy: float | None = None  # share with IoU >= 0.5 (MIG-Bench's Acc@0.5)
    right_image_ratio: float | None = None


def summarize(groups: Sequence[TrajectoryGroup]) -> RolloutSummary:
    samples = [s for g in groups for s in g.samples]
    n = max(1, len(samples))
    grounded = [s for s in samples if s.answer_iou is not None]
    m = len(grounded)
    return RolloutSummary(
        groups=len(groups),
        samples=len(samples),
        accuracy=sum(s.reward >= 1.0 for s in samples) / n,
        reward=sum(s.reward for s in samples) / n,
        valid_grounding_ratio=sum(s.valid_grounding for s in samples) / n,
        valid_grounding_lenient_ratio=sum(s.valid_grounding_lenient for s in samples) / n,
        turns=sum(s.turns for s in samples) / n,
        generated_tokens=sum(s.sampled_tokens for s in samples),
        masked=sum(
            not s.loss_mask.any() and s.finish_reason in ("over_turn", "over_length") for s in samples
        ),
        mean_iou=sum(s.answer_iou for s in grounded) / m if m else None,  # type: ignore[misc]
        iou_accuracy=sum(s.answer_iou >= 0.5 for s in grounded) / m if m else None,  # type: ignore[operator]
        right_image_ratio=sum(bool(s.right_image) for s in grounded) / m if m else None,
    )
