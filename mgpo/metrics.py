"""What a batch of trajectory groups says: the numbers rollouts, evaluation and the learner report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from mgpo.records import TrajectoryGroup, TrajectorySample
from mgpo.turns import INVALID_CROP, crop_source

# a trajectory cut off by the loop (too many turns, too long): masked out of the loss, and it never answered
CUT_OFF = ("over_turn", "over_length")


class Looks(NamedTuple):
    """How one trajectory looked closer: every crop request, the valid ones, those cut from an earlier crop."""

    requests: int  # turns that asked for a crop (an invalid box shows the original again)
    crops: int  # requests that gave a crop
    crop_of_crops: int  # crops cut from an earlier crop (multi-turn "image": N >= 2)
    cut_off: bool = False  # stopped by the loop before it answered

    @property
    def direct(self) -> bool:
        """Answered in its first turn, without asking to look closer (a trajectory cut off in its first turn
        asked for nothing but did not answer either)."""
        return self.requests == 0 and not self.cut_off


def looks(sample: TrajectorySample) -> Looks:
    """Read from the views the loop appended: each crop request after the first turn added one view (a crop,
    or the original again), and the reply that asked for it says which image it cut from. A multiple-choice
    prompt has one original; single-turn tasks (counting, multi-image grounding) never ask."""
    ended = sample.finish_reason == INVALID_CROP  # its last request got no view: count it here
    cut_off = sample.finish_reason in CUT_OFF or ended
    if sample.turns <= 1:
        return Looks(int(ended), 0, 0, cut_off)
    asked = sample.views[1:]
    crops = [i for i, view in enumerate(asked) if view.region is not None]
    # the request for view i + 1 is reply i, made while i + 1 views were shown
    deeper = sum((crop_source(sample.text[i], i + 1) or 1) >= 2 for i in crops if i < len(sample.text))
    return Looks(len(asked) + ended, len(crops), deeper, cut_off)


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
    # looking closer (multi-turn above all; MGPO always asks once, a single-turn task never)
    crops: float  # mean crops per trajectory
    direct_answer_ratio: float  # share answered without asking for a crop
    valid_crop_ratio: float | None  # crops / crop requests (None: nothing asked)
    crop_of_crop_ratio: float | None  # share of crops cut from an earlier crop (None: no crop)
    # multi-image grounding samples only (None when the batch has none)
    mean_iou: float | None = None
    iou_accuracy: float | None = None  # share with IoU >= 0.5 (MIG-Bench's Acc@0.5)
    right_image_ratio: float | None = None


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def summarize(groups: Sequence[TrajectoryGroup]) -> RolloutSummary:
    samples = [s for g in groups for s in g.samples]
    n = max(1, len(samples))
    grounded = [s for s in samples if s.answer_iou is not None]
    m = len(grounded)
    seen = [looks(s) for s in samples]
    crops = sum(x.crops for x in seen)
    return RolloutSummary(
        groups=len(groups),
        samples=len(samples),
        accuracy=sum(s.reward >= 1.0 for s in samples) / n,
        reward=sum(s.reward for s in samples) / n,
        valid_grounding_ratio=sum(s.valid_grounding for s in samples) / n,
        valid_grounding_lenient_ratio=sum(s.valid_grounding_lenient for s in samples) / n,
        turns=sum(s.turns for s in samples) / n,
        generated_tokens=sum(s.sampled_tokens for s in samples),
        masked=sum(not s.loss_mask.any() and x.cut_off for s, x in zip(samples, seen, strict=True)),
        crops=crops / n,
        direct_answer_ratio=sum(x.direct for x in seen) / n,
        valid_crop_ratio=_ratio(crops, sum(x.requests for x in seen)),
        crop_of_crop_ratio=_ratio(sum(x.crop_of_crops for x in seen), crops),
        mean_iou=sum(s.answer_iou for s in grounded) / m if m else None,  # type: ignore[misc]
        iou_accuracy=sum(s.answer_iou >= 0.5 for s in grounded) / m if m else None,  # type: ignore[operator]
        right_image_ratio=sum(bool(s.right_image) for s in grounded) / m if m else None,
    )
