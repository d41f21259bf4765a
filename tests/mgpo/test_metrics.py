"""What a batch says about looking closer: crops, direct answers, valid requests, crops of a crop."""

from __future__ import annotations

import numpy as np
import pytest

from mgpo.boxes import Box
from mgpo.crop import View
from mgpo.metrics import Looks, looks, summarize
from mgpo.records import TrajectoryGroup, TrajectorySample

ORIGINAL = "a" * 64
CROP = Box(0, 0, 100, 100)


def _sample(
    texts: list[str], views: list[View], reward: float = 0.0, finish_reason: str = "stop"
) -> TrajectorySample:
    ids = np.zeros(4, dtype=np.int32)
    return TrajectorySample(
        ids=ids,
        loss_mask=np.ones(4, dtype=bool),
        logprobs=np.zeros(4, dtype=np.float32),
        views=(View(ORIGINAL), *views),
        reward=reward,
        valid_grounding=True,
        turns=len(texts),
        finish_reason=finish_reason,
        text=tuple(texts),
    )


def _ask(image: int) -> str:
    return f'```json\n{{"bbox_2d": [0, 0, 50, 50], "image": {image}}}\n```'


def test_a_direct_answer_asks_for_nothing():
    assert looks(_sample(["\\boxed{A}"], [])) == Looks(0, 0, 0)
    assert looks(_sample(["\\boxed{A}"], [])).direct


def test_a_trajectory_cut_off_in_its_first_turn_is_not_a_direct_answer():
    cut = _sample(['```json\n[{"bbox_2d": [0, 0'], [], finish_reason="over_length")
    assert looks(cut) == Looks(0, 0, 0, cut_off=True) and not looks(cut).direct
    answered = _sample(["\\boxed{A}"], [])
    batch = summarize([TrajectoryGroup("g", "p", 0, (cut, answered), 1, 1)])
    assert batch.direct_answer_ratio == pytest.approx(1 / 2)


def test_an_mgpo_trajectory_asks_once():
    mgpo_box = '```json\n[{"bbox_2d": [0, 0, 50, 50], "label": "key image area"}]\n```'
    assert looks(_sample([mgpo_box, "\\boxed{A}"], [View(ORIGINAL, CROP)])) == Looks(1, 1, 0)
    # an invalid box shows the original again: asked, no crop
    assert looks(_sample(["no box", "\\boxed{A}"], [View(ORIGINAL)])) == Looks(1, 0, 0)


def test_a_crop_of_a_crop_is_the_one_cut_from_image_two_or_later():
    texts = [_ask(1), _ask(2), "\\boxed{B}"]
    assert looks(_sample(texts, [View(ORIGINAL, CROP), View(ORIGINAL, Box(10, 10, 20, 20))])) == Looks(
        2, 2, 1
    )
    # the second request cut the original again
    texts = [_ask(1), _ask(1), "\\boxed{B}"]
    assert looks(_sample(texts, [View(ORIGINAL, CROP), View(ORIGINAL, CROP)])) == Looks(2, 2, 0)


def test_over_turn_counts_only_the_requests_that_were_served():
    # the third request exceeded max_crops: no view was added for it
    texts = [_ask(1), _ask(2), _ask(3)]
    assert looks(_sample(texts, [View(ORIGINAL, CROP), View(ORIGINAL)])) == Looks(2, 1, 0)


def test_a_request_ended_for_its_invalid_box_asked_and_never_answered():
    # rollout.invalid_crop: end: no view was added for the last request
    first = _sample(['```json\n{"bbox_2d": [0, 0, 5}\n```'], [], finish_reason="invalid_crop")
    assert looks(first) == Looks(1, 0, 0, cut_off=True) and not looks(first).direct
    second = _sample(
        [_ask(1), '```json\n{"bbox_2d": [9}\n```'], [View(ORIGINAL, CROP)], finish_reason="invalid_crop"
    )
    assert looks(second) == Looks(2, 1, 0, cut_off=True)
    batch = summarize([TrajectoryGroup("g", "p", 0, (first, second), 1, 1)])
    assert (batch.direct_answer_ratio, batch.valid_crop_ratio, batch.masked) == (0.0, 1 / 3, 0)


def test_summary_ratios():
    group = TrajectoryGroup(
        id="g",
        prompt_id="p",
        policy_version=0,
        samples=(
            _sample(["\\boxed{A}"], [], reward=1.0),
            _sample([_ask(1), "\\boxed{A}"], [View(ORIGINAL, CROP)]),
            _sample([_ask(1), _ask(2), "\\boxed{A}"], [View(ORIGINAL, CROP), View(ORIGINAL, CROP)]),
            _sample([_ask(1), "\\boxed{A}"], [View(ORIGINAL)]),
        ),
        min_pixels=1,
        max_pixels=1,
    )
    s = summarize([group])
    assert s.crops == pytest.approx(3 / 4)
    assert s.direct_answer_ratio == pytest.approx(1 / 4)
    assert s.valid_crop_ratio == pytest.approx(3 / 4)
    assert s.crop_of_crop_ratio == pytest.approx(1 / 3)


def test_ratios_are_none_with_nothing_to_count():
    group = TrajectoryGroup("g", "p", 0, (_sample(["\\boxed{A}"], []),), 1, 1)
    s = summarize([group])
    assert (s.crops, s.direct_answer_ratio, s.valid_crop_ratio, s.crop_of_crop_ratio) == (
        0.0,
        1.0,
        None,
        None,
    )
