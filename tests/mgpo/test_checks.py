import dataclasses

import pytest

from mgpo.boxes import Box
from mgpo.checks import image_problems, prompt_image_limit, prompt_problems
from mgpo.records import PromptRecord, TaskKind

H = "a" * 64
CHOICE = PromptRecord("c", TaskKind.MULTIPLE_CHOICE, "Colour?", (H,), "B", ("red", "blue"))
COUNT = PromptRecord("n", TaskKind.COUNTING, "How many?", (H,), "12")
GROUND = PromptRecord(
    "g", TaskKind.MULTI_IMAGE_GROUNDING, "Where?", (H, H), "2", target_box=Box(0.1, 0.2, 0.5, 0.6)
)


def test_well_formed_prompts_have_no_problems():
    assert [prompt_problems(r, max_images=5) for r in (CHOICE, COUNT, GROUND)] == [[], [], []]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (
            dataclasses.replace(COUNT, answer="²"),
            "a counting answer is a whole number in digits 0-9, got '²'",
        ),
        (
            dataclasses.replace(COUNT, answer="-3"),
            "a counting answer is a whole number in digits 0-9, got '-3'",
        ),
        (
            dataclasses.replace(CHOICE, images=(H, H)),
            "a multiple-choice prompt has one image, this one has 2",
        ),
        (
            dataclasses.replace(CHOICE, answer="C"),
            "multiple choice needs >= 2 choices and an answer among ['A', 'B']",
        ),
        (dataclasses.replace(CHOICE, images=()), "a prompt needs at least one image"),
        (
            dataclasses.replace(GROUND, images=(H,) * 6),
            "6 images, over the 5 the rollout engine takes per prompt",
        ),
        (dataclasses.replace(GROUND, answer="3"), "the answer names the target image, 1..2, got '3'"),
        (
            dataclasses.replace(GROUND, target_box=Box(0.5, 0.2, 0.1, 0.6)),
            "a grounding prompt needs its target_box normalised 0-1 with x1 < x2, y1 < y2, "
            "got Box(x1=0.5, y1=0.2, x2=0.1, y2=0.6)",
        ),
    ],
)
def test_prompt_problems_name_what_the_loop_would_refuse(record, problem):
    assert prompt_problems(record, max_images=5) == [problem]


def test_the_engine_takes_the_crops_plus_the_six_images_of_a_mig_bench_record():
    assert prompt_image_limit(max_crops=1) == 7 and prompt_image_limit(max_crops=3) == 9


def test_image_problems_follow_the_resize_rule():
    assert image_problems(300, 1) == ["image is 300x1: aspect ratio 300 is over the model's 200"]
    assert image_problems(200, 1) == [] and image_problems(0, 5) == [
        "image is 0x5: both sides must be positive"
    ]
