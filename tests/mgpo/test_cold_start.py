"""The cold-start examples: each skill on its own prompt, never a question answered together with a box."""

import random

import pytest

from mgpo.boxes import Box, check_box, parse_box
from mgpo.cold_start import (
    around,
    close_up_region,
    format_example,
    grounding_example,
    panel_view,
    recognition_example,
    skill_examples,
    taught_box,
    zoom_skill_examples,
)
from mgpo.data.synth import QUESTIONS, SynthKnobs, synth_choice_sample, synth_looks_sample
from mgpo.resize import FACTOR, PixelBudget, input_size
from mgpo.templates import IM_END, MGPO, system_turn

BUDGET = PixelBudget(64 * FACTOR * FACTOR, 256 * FACTOR * FACTOR)


@pytest.fixture(scope="module")
def sample():
    return synth_choice_sample(3, 1, SynthKnobs(kinds=("stripes",)))


def test_fixed_option_order_keeps_the_sample_and_sorts_the_options():
    shuffled = synth_choice_sample(0, 3)
    fixed = synth_choice_sample(0, 3, SynthKnobs(shuffle_options=False))
    assert fixed.tags == shuffled.tags and sorted(fixed.choices) == sorted(shuffled.choices)
    assert fixed.choices["ABCDE".index(fixed.answer)] == fixed.tags[0].value
    stripes = SynthKnobs(kinds=("stripes",), shuffle_options=False)
    assert {synth_choice_sample(1, i, stripes).choices for i in range(5)} == {
        ("horizontal", "vertical", "diagonal rising", "diagonal falling")
    }


def test_every_tag_is_recorded_with_its_frame_box_and_value(sample):
    assert [t.frame for t in sample.tags] == ["red", "blue", "green", "orange"]
    assert sample.tags[0].box == sample.target_box
    assert {t.value for t in sample.tags} <= set(sample.choices)
    assert sample.tags[0].value == sample.choices["ABCD".index(sample.answer)]


def test_the_taught_box_is_a_valid_grid_aligned_mgpo_box_around_the_tag(sample):
    size_in = input_size(*sample.images[0].size, BUDGET)
    sx, sy = size_in[0] / sample.images[0].width, size_in[1] / sample.images[0].height
    for tag in sample.tags:
        box = taught_box(tag, sample.images[0].size, BUDGET, 2)
        assert check_box(box, size_in).valid
        assert box.width == box.height == 56 and all(v % 28 == 0 for v in box)
        assert box.x1 <= tag.box.x1 * sx and tag.box.x2 * sx <= box.x2
        assert box.y1 <= tag.box.y1 * sy and tag.box.y2 * sy <= box.y2
    assert taught_box(sample.tags[0], sample.images[0].size, BUDGET, 3).width == 84


def test_around_grows_a_box_and_keeps_it_inside():
    assert around(Box(0, 0, 10, 10), 40, (100, 100)) == Box(0, 0, 40, 40)
    assert around(Box(45, 45, 55, 55), 40, (100, 100)) == Box(30, 30, 70, 70)
    assert around(Box(95, 0, 100, 5), 40, (100, 100)) == Box(60, 0, 100, 40)


def test_a_grounding_example_asks_for_a_described_tag_and_teaches_its_box(sample):
    tag = sample.tags[2]
    example = grounding_example(sample, tag, BUDGET, 2)
    assert "the tag with the green frame" in example.prompt
    assert all(q not in example.prompt for q in QUESTIONS.values())  # no question: not the combined task
    size = example.images[0].size
    assert parse_box(example.reply, size).box == taught_box(tag, sample.images[0].size, BUDGET, 2)
    assert example.reply.endswith(IM_END)
    worded = grounding_example(sample, tag, BUDGET, 2, product_wording=True)
    assert (
        worded.prompt.startswith(system_turn(MGPO.system))
        and "Find the tag with the green frame." in worded.prompt
    )
    assert (
        all(q not in worded.prompt for q in QUESTIONS.values())
        and '"label": "key image area"' in worded.reply
    )
    assert parse_box(worded.reply, size).box == parse_box(example.reply, size).box


def test_a_recognition_example_shows_a_close_up_and_teaches_that_tags_letter(sample):
    tag = sample.tags[1]
    example = recognition_example(sample, tag, BUDGET, 2.5, random.Random(0))
    assert "the tag with the blue frame" in example.prompt and "bbox_2d" not in example.prompt + example.reply
    assert example.target == "ABCD"[sample.choices.index(tag.value)]
    assert example.reply == f"\\boxed{{{example.target}}}{IM_END}"
    region = close_up_region(tag, sample.images[0].size, 2.5, random.Random(0))
    assert region.x1 <= tag.box.x1 and tag.box.x2 <= region.x2 and region.width == pytest.approx(160, abs=1)
    assert min(example.images[0].size) >= 200  # enlarged to the budget: the detail is readable
    in_context = recognition_example(sample, tag, BUDGET, 2.5, random.Random(0), in_context=True)
    assert len(in_context.images) == 2 and in_context.prompt.count("<|image_pad|>") == 2
    assert in_context.images[1].size == example.images[0].size and in_context.target == example.target
    worded = recognition_example(
        sample, tag, BUDGET, 2.5, random.Random(0), in_context=True, product_wording=True
    )
    assert "return the sub-image: <|vision_start|>" in worded.prompt and worded.reply == example.reply


def test_skill_examples_cover_every_tag_with_both_skills(sample):
    examples = skill_examples(sample, BUDGET, 2, (1.8, 3.2), random.Random(1))
    assert [e.skill for e in examples] == ["grounding", "recognition"] * len(sample.tags)
    red = [e for e in examples if "red frame" in e.prompt]
    assert len(red) == 2  # the red tag no more often than the others


@pytest.mark.parametrize(("share", "expected"), [(0.0, 0), (1.0, 40)])
def test_product_wording_sets_the_share_of_grounding_in_the_mgpo_turn_1_template(sample, share, expected):
    rng = random.Random(0)
    grounding = [
        e
        for _ in range(10)
        for e in skill_examples(sample, BUDGET, 2, (1.8, 3.2), rng, product_wording=share)
        if e.skill == "grounding"
    ]
    in_mgpo_words = [e for e in grounding if e.prompt.startswith(system_turn(MGPO.system))]
    assert len(grounding) == 40 and len(in_mgpo_words) == expected
    assert all('"label": "key image area"' in e.reply for e in in_mgpo_words)


def test_format_examples_on_target_box_the_tag_the_question_is_about(sample):
    rng = random.Random(0)
    examples = [format_example(sample, BUDGET, 2, rng, box_share=0.3, on_target=True) for _ in range(200)]
    size = examples[0].images[0].size
    boxed = {b.box for b in (parse_box(e.reply, size) for e in examples) if b.valid}
    (target,) = [t for t in sample.tags if t.box == sample.target_box]
    assert boxed == {taught_box(target, sample.images[0].size, BUDGET, 2)} and target.frame == "red"


def test_format_examples_box_a_random_tag_at_the_set_rate_and_else_guess_a_letter(sample):
    rng = random.Random(0)
    examples = [format_example(sample, BUDGET, 2, rng, box_share=0.3) for _ in range(400)]
    assert all(e.skill == "format" and e.prompt == examples[0].prompt for e in examples)
    assert examples[0].prompt.startswith(system_turn(MGPO.system)) and sample.question in examples[0].prompt
    size = examples[0].images[0].size
    boxes = [parse_box(e.reply, size) for e in examples]
    boxed = [b.box for b in boxes if b.valid]
    assert len(boxed) / len(examples) == pytest.approx(0.3, abs=0.05)
    # around any tag, not only the one the question is about: where to look stays RL's to learn
    taught = {taught_box(tag, sample.images[0].size, BUDGET, 2): tag.frame for tag in sample.tags}
    assert {taught[b] for b in boxed} == {"red", "blue", "green", "orange"}
    guesses = [e.reply for e, b in zip(examples, boxes, strict=True) if not b.valid]
    assert {g.removesuffix(IM_END) for g in guesses} == {
        "\\boxed{A}",
        "\\boxed{B}",
        "\\boxed{C}",
        "\\boxed{D}",
    }


@pytest.mark.parametrize(("width", "period", "readable"), [(1, 3, False), (2, 4, False), (3, 6, True)])
def test_stripes_vanish_at_the_input_budget_unless_too_coarse(width, period, readable):
    import numpy as np
    from PIL import Image

    from mgpo.data.synth import STRIPES, TARGET_FRAME, tag_image

    knobs = SynthKnobs(stripe_width=width, stripe_period=period)
    spreads = []
    for value in STRIPES:
        tag = tag_image("stripes", value, TARGET_FRAME, knobs)
        shrunk = tag.resize((14, 14), Image.Resampling.BICUBIC)  # ~4.5x: a 2K original at 256*28*28 pixels
        spreads.append(float(np.asarray(shrunk.convert("L"), dtype=float)[3:-3, 3:-3].std()))
    assert (max(spreads) > 4.0) == readable, spreads


LOOKS = SynthKnobs(min_side=2048, max_side=2048, grid=4, stripe_width=1, clutter=0, position_cue=True)
VIEW = PixelBudget(224 * 224, 224 * 224)


def _looks_sample(look):
    return synth_looks_sample(3, 0, SynthKnobs(**{**LOOKS.__dict__, "looks": (look,)}))


@pytest.mark.parametrize("look", [0, 1, 2])
def test_zoom_skills_ground_and_read_each_tag_at_the_zoom_a_crop_would_show_it(look):
    import numpy as np

    sample = _looks_sample(look)
    examples = zoom_skill_examples(sample, VIEW, 2, random.Random(0), product_wording=0.0)
    grounding = [e for e in examples if e.skill == "grounding"]
    reading = [e for e in examples if e.skill == "recognition"]
    # every panel in the whole view (a 2x2-token box: the panel's cell); look2 also every small tag of
    # the red panel, in the panel's own view
    assert len(grounding) == (8 if look == 2 else 4) and len(reading) == 4
    whole = [parse_box(e.target, (224, 224)).box for e in grounding[:4]]
    panels = [t.box for t in sample.tags[:4]]
    assert whole == [Box(*(v * 224 / 2048 for v in p)) for p in panels]
    if look == 2:
        inner = sample.tags[4:]
        red = sample.tags[0].box
        in_view = [parse_box(e.target, (224, 224)).box for e in grounding[4:]]
        # a small tag fills the middle 96 px of its 128-px cell of the panel: 56 px of the panel's view
        cells = [((t.box.x1 - red.x1 - 16) * 224 / 512, (t.box.y1 - red.y1 - 16) * 224 / 512) for t in inner]
        assert [(b.x1, b.y1) for b in in_view] == cells and all(b.width == 56 for b in in_view)
    # each answer is read where its stripes show: tens of grey levels inside the close-up's middle
    letters = {e.target for e in reading}
    assert letters <= set("ABCD") and any(sample.answer == x for x in letters)
    for example in reading:
        middle = np.asarray(example.images[-1].convert("L"), dtype=np.float32)[80:144, 80:144]
        assert middle.std() > 30.0 or look == 0  # look0: the whole image, the panel somewhere in it


@pytest.mark.parametrize("look", [0, 1])
def test_whole_view_read_frames_limit_the_reads_where_every_panel_shows(look):
    sample = _looks_sample(look)
    examples = zoom_skill_examples(sample, VIEW, 2, random.Random(0), 0.0, None, ("red",))
    reading = [e for e in examples if e.skill == "recognition"]
    # look0: the red panel alone is asked about in the whole view; look1: each panel in its own crop
    assert len(reading) == (1 if look == 0 else 4)
    if look == 0:
        assert reading[0].target == sample.answer
        assert "red frame" in reading[0].prompt


@pytest.mark.parametrize("look", [0, 1, 2])
def test_a_look2_questions_second_look_is_taught_in_its_red_panels_own_view(look):
    sample = _looks_sample(look)
    view = panel_view(sample)
    if look < 2:
        assert view is None  # nothing to look for inside a panel
        return
    red, tag = sample.tags[0].box, sample.tags[4]
    assert view.images[0].size == (512, 512) and view.question == sample.question
    assert tag.box == sample.target_box and tag.frame == "red"  # the question's tag, in the whole image
    assert view.target_box == Box(
        tag.box.x1 - red.x1, tag.box.y1 - red.y1, tag.box.x2 - red.x1, tag.box.y2 - red.y1
    )
    # the turn-1 format example there boxes the red tag in the panel's 224-px view: its 2x2-token cell
    rng = random.Random(0)
    examples = [format_example(view, VIEW, 2, rng, box_share=1.0, on_target=True) for _ in range(5)]
    boxes = {parse_box(e.reply, (224, 224)).box for e in examples}
    x, y = (tag.box.x1 - red.x1 - 16) * 224 / 512, (tag.box.y1 - red.y1 - 16) * 224 / 512
    assert boxes == {Box(x, y, x + 56, y + 56)}
