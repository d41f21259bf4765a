"""Token sequences built from turns, and the loss mask: only tokens the model generated carry loss.

MGPO: system/user text, the injected turn-2 text and every image token are masked out, in both turns.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

import numpy as np
import torch


class Source(StrEnum):
    PROMPT = "prompt"  # the rendered first prompt
    GENERATED = "generated"  # sampled by the policy
    INJECTED = "injected"  # written by the system between turns (crop turn, retry turn)


class Segment(NamedTuple):
    source: Source
    ids: list[int]
    logprobs: list[float] | None = None  # behaviour logprobs, GENERATED segments only


class Sequence(NamedTuple):
    ids: np.ndarray  # [T] int32
    loss_mask: np.ndarray  # [T] bool, True where the policy generated the token
    logprobs: np.ndarray  # [T] float32 behaviour logprobs, 0.0 where loss_mask is False


def build_sequence(segments: list[Segment], keep: bool = True) -> Sequence:
    """Concatenate turn segments into one token sequence with its loss mask.

    `keep=False` zeroes the whole mask: over-turn / over-length trajectories are masked out of the loss
    rather than punished (MGPO's stated limitation, our multi-turn mode).
    """
    ids: list[int] = []
    mask: list[bool] = []
    logprobs: list[float] = []
    for segment in segments:
        generated = segment.source is Source.GENERATED
        if generated and (segment.logprobs is None or len(segment.logprobs) != len(segment.ids)):
            raise ValueError("a generated segment needs one behaviour logprob per token")
        ids.extend(segment.ids)
        mask.extend([generated and keep] * len(segment.ids))
        logprobs.extend(segment.logprobs if generated else [0.0] * len(segment.ids))  # type: ignore[arg-type]
    return Sequence(
        np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=bool), np.asarray(logprobs, dtype=np.float32)
    )


def assistant_mask(ids: list[int], im_start: int, im_end: int, assistant_header: list[int]) -> np.ndarray:
    """Mask of tokens inside assistant turns: after `<|im_start|>assistant\\n` up to and including <|im_end|>.

    The chat template's own view of what the model says; a test oracle for `build_sequence`.
    """
    mask = np.zeros(len(ids), dtype=bool)
    inside = False
    i = 0
    while i < len(ids):
        if (
            not inside
            and ids[i] == im_start
            and ids[i + 1 : i + 1 + len(assistant_header)] == assistant_header
        ):
            inside = True
            i += 1 + len(assistant_header)
            continue
        if inside:
            mask[i] = True
            if ids[i] == im_end:
                inside = False
        i += 1
    return mask


def expand_image_pads(seq: Sequence, pad_id: int, tokens_per_image: list[int]) -> Sequence:
    """Replace the i-th <|image_pad|> of a compact sequence by `tokens_per_image[i]` copies.

    Sequences travel compact (one pad per image, as vLLM takes them); the model's forward needs one pad per
    visual token. Expanded pads carry no loss and no logprob.
    """
    positions = np.flatnonzero(seq.ids == pad_id)
    if len(positions) != len(tokens_per_image):
        raise ValueError(f"{len(positions)} image pads in the sequence but {len(tokens_per_image)} images")
    repeats = np.ones(len(seq.ids), dtype=np.int64)
    repeats[positions] = tokens_per_image
    return Sequence(
        np.repeat(seq.ids, repeats),
        np.repeat(seq.loss_mask, repeats) & ~np.repeat(seq.ids == pad_id, repeats),
        np.where(np.repeat(seq.ids == pad_id, repeats), 0.0, np.repeat(seq.logprobs, repeats)).astype(
            np.float32
        ),
    )


def turn_starts(loss_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: each model turn's first generated token, where `loss_mask` [B, T] switches on. In the
    multi-turn mode it is the token that decides (`\\boxed{` answers, `{"bbox_2d"` asks for a crop), one
    token against the dozens that carry out the decision (learner.decision_weight weighs it)."""
    before = torch.zeros_like(loss_mask)
    before[:, 1:] = loss_mask[:, :-1]
    return loss_mask & ~before


def decision_weights(loss_mask: torch.Tensor, weight: float) -> torch.Tensor:
    """[B, T] float: `weight` on each turn's first generated token (turn_starts), 1 elsewhere."""
    return 1.0 + (weight - 1.0) * turn_starts(loss_mask).float()
