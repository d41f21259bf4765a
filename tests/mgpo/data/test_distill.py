"""The multi-turn paths distillation writes: the request format the loop reads, the whole exchange with the
loop's own injected turns, and the file."""

from __future__ import annotations

import dataclasses

import pytest

from mgpo.boxes import Box, BoxRule, parse_box
from mgpo.data.distill import (
    Bars,
    LookPath,
    answer_turn,
    conversation,
    crop_request,
    first_way,
    letter_rate,
    letter_shares,
    looks_share,
    pass_rate,
    read_paths,
    write_paths,
)
from mgpo.records import PromptRecord, TaskKind
from mgpo.templates import BOX_STOP, IM_END, first_prompt, followup, multiturn
from mgpo.turns import crop_source

RECORD = PromptRecord(
    id="q1",
    kind=TaskKind.MULTIPLE_CHOICE,
    question="Which way do the stripes on the tag with the red frame run?",
    images=("a" * 64,),
    answer="B",
    choices=("horizontal", "vertical"),
)


def test_a_crop_request_is_read_by_the_multi_turn_loop_as_written():
    request = crop_request(Box(56.4, 0, 112, 55.6), 2)
    grounding = parse_box(request, (224, 224), BoxRule.LENIENT)
    assert grounding.valid and grounding.box == Box(56, 0, 112, 56)
    assert crop_source(request, 2) == 2 and crop_source(request, 1) is None  # image 2 must exist
    assert request.endswith(BOX_STOP[1])  # the turn ends where the loop's stop string ends it


def test_the_exchange_is_the_loops_tokens_with_only_model_turns_trained():
    path = LookPath(
        (crop_request(Box(0, 0, 56, 56), 1), crop_request(Box(56, 56, 112, 112), 2), answer_turn("B")),
        (Box(0, 0, 512, 512), Box(128, 128, 256, 256)),
    )
    template = multiturn(2)
    pieces = conversation(RECORD, template, path)
    assert [trained for _, trained in pieces] == [False, True, False, True, False, True]
    q, c = RECORD.question, RECORD.choices
    assert pieces[0][0] == first_prompt(template, q, c)
    # after a request the loop closes the turn itself (the model stopped at the fence) and shows image N
    assert pieces[2][0] == followup(template, q, c, True, False, image_number=2)
    assert pieces[4][0] == followup(template, q, c, True, False, image_number=3)
    assert "Image 3:" in pieces[4][0] and pieces[4][0].startswith(IM_END)
    assert pieces[5][0] == "\\boxed{B}" + IM_END
    direct = conversation(RECORD, template, LookPath((answer_turn("B"),), ()))
    assert [text for text, _ in direct][1:] == ["\\boxed{B}" + IM_END]


def test_a_path_needs_one_turn_more_than_its_crops():
    with pytest.raises(ValueError, match="2 turns for 0 crops"):
        conversation(RECORD, multiturn(2), LookPath(("a", "b"), ()))


def test_paths_round_trip_and_a_bad_line_is_named(tmp_path):
    paths = {
        "q1": LookPath((answer_turn("A"),), ()),
        "q2": LookPath((crop_request(Box(0, 0, 56, 56), 1), answer_turn("C")), (Box(0, 0, 512.0, 512.0),)),
    }
    write_paths(tmp_path, paths)
    assert read_paths(tmp_path) == paths
    assert looks_share(list(paths.values())) == {"look0": 1, "look1": 1}
    (tmp_path / "paths.jsonl").write_text('{"id": "q3", "turns": ["x"], "regions": [[0, 0, 1, 1]]}\n')
    with pytest.raises(ValueError, match=r"paths.jsonl:1: 1 turns for 1 crops"):
        read_paths(tmp_path)
    (tmp_path / "paths.jsonl").write_text('{"id": "q3"}\n')
    with pytest.raises(ValueError, match=r"paths.jsonl:1: not an"):
        read_paths(tmp_path)


@pytest.mark.parametrize(
    ("direct", "blind", "crop", "way"),
    [
        (0.625, 0.0, 0.25, 0),  # read from the whole image, better than a crop: no crop
        (1.0, 1.0, 0.5, 1),  # a favourite letter passes blind as well: not a reading, so the crop
        (1.0, 1.0, 0.0, None),  # ... and no crop solved it either: try a crop of a crop
        (0.5, 0.0, 0.625, 1),  # both clear their bars: the more often right
        (0.5, 0.0, 0.5, 0),  # a tie: the shorter
        (0.375, 0.0, 0.375, None),  # neither clears its bar
    ],
)
def test_the_way_is_the_better_of_reading_and_cropping_and_a_guess_is_no_reading(direct, blind, crop, way):
    assert first_way(direct, blind, crop, Bars(direct=0.5, blind_margin=0.25, crop=0.5)) == way


def test_bars_at_zero_still_need_a_solved_sample():
    floor = Bars(direct=0.0, blind_margin=0.0, crop=0.0, crop_margin=0.0)
    assert first_way(0.0, 0.0, 0.0, floor) is None and first_way(0.0, 0.0, 0.125, floor) == 1


@pytest.mark.parametrize(
    ("crop", "crop_blind", "way"),
    [
        (0.75, 0.25, 1),  # right after the crop 0.5 more often than with it blurred: a reading
        (0.75, 0.625, None),  # the crop draws a favourite answer blurred too: no reading, try a crop of it
    ],
)
def test_a_crop_must_beat_a_guess_after_the_crop(crop, crop_blind, way):
    bars = Bars(direct=0.5, blind_margin=0.25, crop=0.5, crop_margin=0.25)
    assert first_way(0.0, 0.0, crop, bars, crop_blind) == way
    assert first_way(0.625, 0.0, crop, bars, crop_blind) == (1 if way else 0)  # else the whole view read


def test_a_letter_a_kind_of_image_draws_scores_as_a_guess_not_a_reading():
    """Four questions, four askings each: the policy says B to both questions of one kind whatever their
    answer, and reads the other two; its overall letter shares make naming B score 0.5 on a B question."""

    def asked(q: str, answer: str, replies: str) -> list[tuple[PromptRecord, str]]:
        record = dataclasses.replace(RECORD, id=q, answer=answer, choices=("a", "b", "c", "d"))
        return [(record, answer_turn(letter)) for letter in replies]

    direct = {
        "q1": asked("q1", "A", "BBBB"),  # the kind that draws B; its answer is A: never right
        "q2": asked("q2", "B", "BBBB"),  # the same kind, answer B: always right, but so is the guess
        "q3": asked("q3", "C", "CCCD"),
        "q4": asked("q4", "D", "DDDC"),
    }
    shares = letter_shares([pair for pairs in direct.values() for pair in pairs])
    assert shares == {"A": 0.0, "B": 0.5, "C": 0.25, "D": 0.25}
    assert [pass_rate(direct[q]) for q in direct] == [0.0, 1.0, 0.75, 0.75]
    rates = [letter_rate([v for v, _ in direct[q]], shares) for q in direct]
    assert rates == [0.0, 0.5, 0.25, 0.25]
    bars = Bars(direct=0.5, blind_margin=0.25, crop=0.5)
    # q2 clears 0.5 + 0.25 above its letter's share only because it is always right; at 0.625 it would not
    assert first_way(1.0, rates[1], 0.0, bars) == 0 and first_way(0.625, rates[1], 0.0, bars) is None
    assert first_way(0.75, rates[2], 0.0, bars) == 0  # a reading: 0.5 above what the letter C scores
