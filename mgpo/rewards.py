"""Rule-based rewards: multiple choice, counting, multi-image grounding. Never raise on model text.

MGPO rewards only the final answer: 1.0 when the content of the LAST \\boxed{} in the model's own text is the
right letter (arXiv 2507.05920). As the reference code does, that content is graded whole by mathruler (its
normalised string equals the answer); beyond it, a letter in a bracket or with a full stop, or the right
option's own text, is right too. A letter inside a sentence ("A red car", "I think B") is not an answer.
Callers pass only model-generated text, never the prompt (whose template itself mentions \\boxed{}).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from mathruler.grader import grade_answer
from scipy.optimize import linear_sum_assignment

from mgpo.boxes import MAX_REPLY_CHARS, Box, iou
from mgpo.templates import LETTERS

_BOXED = "\\boxed{"
_LETTER = re.compile(r"^\(?([A-Za-z])\)?[.:]?$")  # "B", "(B)", "B.", "B)"
# a marked letter and then that option's own text: "(B) blue", "B. blue", "B) blue"
_LETTER_TEXT = re.compile(r"^(?:\(([A-Za-z])\)|([A-Za-z])[.:)])\s+(.+)$", re.DOTALL)
# Longer boxed contents are not an option; sympy is not run on them (it can take seconds on garbage).
MAX_GRADED_CHARS = 200
_INT = re.compile(r"^\s*(-?\d{1,9})(?:\.0*)?\s*$")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# the whole reply; the loop's replies keep their end-of-turn token (<|im_end|>), which is not a format error
_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*(?:<\|im_end\|>)?\s*$", re.DOTALL)
_POINTS_FENCE = re.compile(r"```(?:json)?\s*(\[.*?\])\s*```", re.DOTALL)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (braces balanced), or None when there is none or it is unclosed."""
    if len(text) > MAX_REPLY_CHARS:
        text = text[-MAX_REPLY_CHARS:]
    start = text.rfind(_BOXED)
    if start == -1:
        return None
    depth, i = 1, start + len(_BOXED)
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + len(_BOXED) : i]
        i += 1
    return None


def _plain(text: str) -> str:
    return " ".join(text.split()).strip(" .").lower()


# Cached: mathruler hands two different letters to sympy's simplify (~6 ms a call), and a rollout grades the
# same few contents ("A".."E") against the same few answers over and over: uncached, grading took 38% of a
# rollout actor's time on the demo's single-turn batches (cProfile), more than vLLM's engine steps.
@functools.lru_cache(maxsize=4096)
def _mathruler_equal(content: str, answer: str) -> bool:
    try:
        return bool(grade_answer(content, answer))
    except Exception:  # noqa: BLE001 -- a grader crash on model text is a wrong answer, not a failed run
        return False


def choice_correct(content: str, answer: str, choices: Sequence[str] = ()) -> bool:
    """Whether the boxed `content` names option `answer` (a letter) of `choices`."""
    content = content.strip()
    if not content or len(content) > MAX_GRADED_CHARS:
        return False
    answer = answer.strip().upper()
    if _mathruler_equal(content, answer):  # the reference's rule: "B", "b", "(B)", "\\text{B}"
        return True
    index = LETTERS.find(answer) if len(answer) == 1 else -1
    own_text = _plain(choices[index]) if 0 <= index < len(choices) else None
    letter = _LETTER.match(content)
    if letter is not None:
        return letter.group(1).upper() == answer
    if own_text is None:
        return False
    marked = _LETTER_TEXT.match(content)
    if marked is not None:
        return (marked.group(1) or marked.group(2)).upper() == answer and _plain(marked.group(3)) == own_text
    return _plain(content) == own_text


def with_direct_bonus(reward: float, asked: bool, bonus: float) -> float:
    """Multi-turn: a right answer (reward 1) given without asking to look closer scores 1 + `bonus`, an
    incentive to answer from the shrunk image when it suffices (fewer image tokens); a wrong one stays 0, so
    accuracy still reads reward >= 1."""
    return reward + bonus if reward >= 1.0 and not asked else reward


def choice_reward(reply: str, answer: str, choices: Sequence[str] = ()) -> float:
    """1.0 if the last \\boxed{} of `reply` names option `answer` (its letter, or its text), else 0.0."""
    content = last_boxed(reply)
    return 1.0 if content is not None and choice_correct(content, answer, choices) else 0.0


class CountingReward(NamedTuple):
    reward: float  # accuracy + point_weight * points
    accuracy: float  # 1.0 if the boxed count is right
    points: float  # share of points matched within the radius (0.0 when not asked for)


def boxed_count(reply: str) -> int | None:
    content = last_boxed(reply)
    match = _INT.match(content) if content is not None else None
    return int(match.group(1)) if match else None


def parse_points(reply: str) -> list[tuple[float, float]]:
    """Points from the last fenced JSON list of {"point_2d": [x, y]}; malformed entries are skipped."""
    blocks = _POINTS_FENCE.findall(reply[-MAX_REPLY_CHARS:])
    if not blocks:
        return []
    try:
        items = json.loads(blocks[-1])
    except (ValueError, RecursionError):
        return []
    points = []
    for item in items if isinstance(items, list) else []:
        xy = item.get("point_2d") if isinstance(item, dict) else None
        if (
            isinstance(xy, list)
            and len(xy) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in xy)
        ):
            points.append((float(xy[0]), float(xy[1])))
    return points


def point_match(
    predicted: list[tuple[float, float]], truth: list[tuple[float, float]], radius: float
) -> float:
    """Hungarian matching of predicted to true points; hits within `radius` over max(#pred, #true).

    Dividing by the larger count punishes both missed objects and spurious points.
    """
    if not predicted or not truth:
        return 1.0 if not predicted and not truth else 0.0
    cost = np.linalg.norm(np.asarray(predicted)[:, None, :] - np.asarray(truth)[None, :, :], axis=-1)
    rows, cols = linear_sum_assignment(cost)
    hits = int((cost[rows, cols] <= radius).sum())
    return hits / max(len(predicted), len(truth))


def counting_reward(
    reply: str,
    count: int,
    points: list[tuple[float, float]] | None = None,
    point_weight: float = 0.0,
    radius: float = 28.0,
) -> CountingReward:
    """Count accuracy, plus `point_weight` x point matching when true `points` (input pixels) are given.

    MGPO's counting side experiment: the point reward adds almost nothing (81.0 -> 81.9), so it is off by default.
    """
    accuracy = 1.0 if boxed_count(reply) == count else 0.0
    if points is None or point_weight == 0.0:
        return CountingReward(accuracy, accuracy, 0.0)
    matched = point_match(parse_points(reply), points, radius)
    return CountingReward(accuracy + point_weight * matched, accuracy, matched)


class GroundingReward(NamedTuple):
    format: float  # 1.0 for <think>...</think><answer>...</answer> with a readable answer
    iou: float  # IoU with the true box in the TARGET image, 0.0 when the image is wrong
    hit: float  # 1.0 when iou >= threshold (MIG-Bench: Acc@IoU>=0.5)
    image: int | None  # the 1-based image number the model named
    box: Box | None = None  # the answer box normalised 0-1 to the named image (None: no such image)


def grounding_score(
    result: GroundingReward, iou_reward: str = "continuous", format_weight: float = 0.5
) -> float:
    """The RL reward of a grounding answer: `format_weight` x format + the IoU (continuous) or its hit
    (thresholded: 1 at IoU >= 0.5), the two accuracy rewards of arXiv 2507.00748."""
    if iou_reward not in ("continuous", "thresholded"):
        raise ValueError(f"iou_reward is 'continuous' or 'thresholded', got {iou_reward!r}")
    return format_weight * result.format + (result.iou if iou_reward == "continuous" else result.hit)


def parse_answer(reply: str) -> tuple[int, Box] | None:
    """(image number, box) of the last <answer>{"image": N, "bbox_2d": [...]}</answer>, or None."""
    answers = _ANSWER.findall(reply[-MAX_REPLY_CHARS:])
    if not answers:
        return None
    try:
        obj = json.loads(answers[-1], parse_constant=lambda name: float("nan"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    image, coords = obj.get("image"), obj.get("bbox_2d")
    numbers = isinstance(coords, list) and len(coords) == 4
    numbers = numbers and all(
        isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) for c in coords
    )
    if not isinstance(image, int) or isinstance(image, bool) or not numbers:
        return None
    return image, Box(*(float(c) for c in coords))


def grounding_reward(
    reply: str,
    target_image: int,
    target_box: Box,
    input_sizes: list[tuple[int, int]],
    threshold: float = 0.5,
) -> GroundingReward:
    """Multi-image grounding (arXiv 2507.00748): format reward and IoU accuracy.

    `target_image` is 1-based; `target_box` is normalised 0-1 to the target image (MIG-Bench's form);
    the model answers in pixels of that image's resized input, whose (W, H) are in `input_sizes`.
    """
    parsed = parse_answer(reply)
    if parsed is None:
        return GroundingReward(0.0, 0.0, 0.0, None)
    image, box = parsed
    well_formed = 1.0 if _FORMAT.match(reply[-MAX_REPLY_CHARS:]) else 0.0
    if not 1 <= image <= len(input_sizes):
        return GroundingReward(well_formed, 0.0, 0.0, image)
    width, height = input_sizes[image - 1]
    normalised = Box(box.x1 / width, box.y1 / height, box.x2 / width, box.y2 / height)
    if image != target_image:
        return GroundingReward(well_formed, 0.0, 0.0, image, normalised)
    overlap = iou(normalised, target_box)
    return GroundingReward(well_formed, overlap, 1.0 if overlap >= threshold else 0.0, image, normalised)
