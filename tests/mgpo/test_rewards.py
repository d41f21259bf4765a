import pytest

from mgpo.boxes import Box
from mgpo.rewards import (
    GroundingReward,
    boxed_count,
    choice_correct,
    choice_reward,
    counting_reward,
    grounding_reward,
    grounding_score,
    last_boxed,
    parse_points,
    point_match,
    with_direct_bonus,
)


def test_last_boxed_takes_the_last_one_and_balances_braces():
    assert last_boxed(r"first \boxed{A} then \boxed{\text{B}}") == r"\text{B}"
    assert last_boxed(r"\boxed{A") is None
    assert last_boxed("nothing") is None


CHOICES = ("red car", "blue van", "green bus")


@pytest.mark.parametrize(
    "content", ["B", "(B)", "B.", "b", " B ", r"\text{B}", "B)", "(B) blue van", "B. Blue van.", "blue van"]
)
def test_choice_correct_accepts_the_letter_or_the_options_own_text(content):
    assert choice_correct(content, "B", CHOICES)


@pytest.mark.parametrize(
    ("content", "answer"),
    [
        ("A red car", "A"),  # a sentence that starts with the letter is not the letter
        ("A and B", "A"),
        ("I think B", "B"),
        ("I think B", "I"),
        ("(B) red car", "B"),  # B's letter with A's text
        ("(A) blue van", "B"),
        ("Both", "B"),
        ("", "B"),
        ("(AB)", "A"),
        ("B" * 300, "B"),
    ],
)
def test_choice_correct_rejects_letters_inside_sentences_and_mismatches(content, answer):
    assert not choice_correct(content, answer, CHOICES)


def test_choice_correct_without_choices_grades_the_letter_alone():
    assert choice_correct("(C)", "C") and not choice_correct("green bus", "C")


def test_choice_reward_scores_only_the_last_boxed_answer():
    assert choice_reward(r"maybe \boxed{A}, no: \boxed{(C)}", "C") == 1.0
    assert choice_reward(r"maybe \boxed{C}, no: \boxed{A}", "C") == 0.0
    assert choice_reward("the answer is C", "C") == 0.0  # no \boxed{}
    assert choice_reward(r"\boxed{c}", "C") == 1.0
    assert choice_reward(r"so \boxed{green bus}", "C", CHOICES) == 1.0
    assert choice_reward(r"\boxed{A red car}", "A", CHOICES) == 0.0


def test_a_repeated_content_is_graded_once_with_the_same_verdict():
    from mgpo.rewards import _mathruler_equal

    _mathruler_equal.cache_clear()
    verdicts = [choice_reward(r"\boxed{B}", "A") for _ in range(8)] + [choice_reward(r"\boxed{b}", "B")]
    assert verdicts == [0.0] * 8 + [1.0]
    info = _mathruler_equal.cache_info()
    assert (info.misses, info.hits) == (2, 7)  # sympy ran for ("B", "A") once and ("b", "B") once


def test_the_direct_bonus_goes_to_right_answers_that_asked_for_nothing():
    assert with_direct_bonus(1.0, asked=False, bonus=0.2) == 1.2
    assert with_direct_bonus(1.0, asked=True, bonus=0.2) == 1.0
    assert with_direct_bonus(0.0, asked=False, bonus=0.2) == 0.0  # a wrong answer earns nothing for haste


def test_grounding_score_weighs_format_and_takes_the_iou_or_its_hit():
    result = GroundingReward(format=1.0, iou=0.6, hit=1.0, image=2)
    assert grounding_score(result) == pytest.approx(0.5 + 0.6)
    assert grounding_score(result, "thresholded", 0.0) == 1.0
    assert grounding_score(result._replace(iou=0.4, hit=0.0), "thresholded") == 0.5
    with pytest.raises(ValueError, match="continuous"):
        grounding_score(result, "binary")


def test_counting_reward_accuracy_and_hungarian_point_reward():
    reply = (
        '```json\n[{"point_2d": [10, 10]}, {"point_2d": [100, 100]}, {"point_2d": [500, 5]}]\n```\n\\boxed{3}'
    )
    truth = [(12.0, 9.0), (103.0, 98.0), (300.0, 300.0)]
    assert boxed_count(reply) == 3
    # two predicted points within 28 px of a true one; the third is 360 px away -> 2 hits / max(3, 3)
    result = counting_reward(reply, 3, truth, point_weight=0.5)
    assert result.accuracy == 1.0
    assert result.points == pytest.approx(2 / 3)
    assert result.reward == pytest.approx(1.0 + 0.5 * 2 / 3)
    assert counting_reward(reply, 4).reward == 0.0


def test_point_match_penalises_extra_points_and_handles_empty_sets():
    # one true point, two predicted (one exact): 1 hit / max(2, 1)
    assert point_match([(0, 0), (50, 50)], [(0, 0)], 5) == 0.5
    assert point_match([], [], 5) == 1.0
    assert point_match([], [(1, 1)], 5) == 0.0


def test_parse_points_skips_malformed_entries():
    assert parse_points('```json\n[{"point_2d": [1, 2]}, {"point_2d": ["x", 2]}, 7]\n```') == [(1.0, 2.0)]
    assert parse_points("```json\n[{\n```") == []


def test_grounding_reward_scores_format_and_iou_in_the_target_image():
    sizes = [(448, 448), (224, 224)]
    target = Box(0.25, 0.25, 0.75, 0.75)
    good = '<think>the second</think><answer>{"image": 2, "bbox_2d": [56, 56, 168, 168]}</answer>'
    r = grounding_reward(good, 2, target, sizes)
    assert r.format == 1.0 and r.iou == pytest.approx(1.0) and r.hit == 1.0 and r.image == 2
    # right image, half-overlapping box: [56, 56, 112, 168] covers x 0.25-0.5: IoU 0.5
    half = '<think>.</think><answer>{"image": 2, "bbox_2d": [56, 56, 112, 168]}</answer>'
    assert grounding_reward(half, 2, target, sizes).iou == pytest.approx(0.5)
    wrong_image = '<think>.</think><answer>{"image": 1, "bbox_2d": [112, 112, 336, 336]}</answer>'
    assert grounding_reward(wrong_image, 2, target, sizes)[1:3] == (0.0, 0.0)
    # the answer box, normalised to the image it names (what the viewer draws): right or wrong image
    assert r.box == pytest.approx(Box(0.25, 0.25, 0.75, 0.75))
    assert grounding_reward(wrong_image, 2, target, sizes).box == pytest.approx(Box(0.25, 0.25, 0.75, 0.75))
    assert grounding_reward(wrong_image.replace('"image": 1', '"image": 3'), 2, target, sizes).box is None
    no_think = '<answer>{"image": 2, "bbox_2d": [56, 56, 168, 168]}</answer>'
    assert grounding_reward(no_think, 2, target, sizes).format == 0.0


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "<answer>not json</answer>",
        '<answer>{"image": 9, "bbox_2d": [0,0,1,1]}</answer>',
        '<answer>{"image": 1, "bbox_2d": [NaN,0,1,1]}</answer>',
    ],
)
def test_grounding_reward_gives_zero_accuracy_on_garbage(reply):
    r = grounding_reward(reply, 1, Box(0, 0, 1, 1), [(448, 448)])
    assert r.iou == 0.0 and r.hit == 0.0


def test_grounding_format_reward_accepts_the_end_of_turn_the_loop_keeps():
    sizes = [(280, 280), (280, 280)]
    reply = '<think>the second one</think><answer>{"image": 2, "bbox_2d": [28, 28, 140, 140]}</answer>'
    target = Box(0.1, 0.1, 0.5, 0.5)
    assert grounding_reward(reply + "<|im_end|>", 2, target, sizes).format == 1.0
    assert grounding_reward(reply + "<|im_end|> trailing", 2, target, sizes).format == 0.0
