import dataclasses
import itertools
import json

import numpy as np
import pytest
from PIL import Image

from mgpo.boxes import Box
from mgpo.crop import render_view
from mgpo.data.dataset import open_store, read_prompts, write_synthetic
from mgpo.data.synth import (
    TARGET_FRAME,
    SynthKnobs,
    synth_choice_sample,
    synth_counting_sample,
    synth_grounding_sample,
    synth_looks_sample,
    tag_image,
)
from mgpo.records import TaskKind
from mgpo.resize import FACTOR, PixelBudget
from mgpo.templates import LETTERS

TINY_BUDGET = PixelBudget(64 * FACTOR * FACTOR, 256 * FACTOR * FACTOR)


def test_choice_samples_are_deterministic_per_seed_and_index():
    a, b = synth_choice_sample(3, 5), synth_choice_sample(3, 5)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert (a.question, a.choices, a.answer, a.target_box) == (b.question, b.choices, b.answer, b.target_box)
    c = synth_choice_sample(4, 5)
    assert not np.array_equal(np.asarray(a.images[0])[:64], np.asarray(c.images[0])[:64])


def test_choice_samples_are_large_with_a_small_red_framed_target():
    for index in range(6):
        s = synth_choice_sample(0, index)
        image = s.images[0]
        assert min(image.size) >= 1536
        assert s.target_box.width == 64 and s.target_box.height == 64
        assert len(s.choices) == 4 and s.answer in "ABCD"
        corner = image.getpixel((int(s.target_box.x1) + 2, int(s.target_box.y1) + 2))
        assert corner == TARGET_FRAME


def test_answer_letters_are_spread_across_options():
    letters = {synth_choice_sample(1, i).answer for i in range(40)}
    assert letters == set("ABCD")


def _detail_contrast(sample, view: str) -> float:
    """Smallest RMS grey difference, inside the tag, between renderings with different answers."""
    original, t = sample.images[0], sample.target_box
    region = (
        Box(0, 0, original.width, original.height)
        if view == "input"
        else Box(t.x1 - 48, t.y1 - 48, t.x2 + 48, t.y2 + 48)
    )
    renders = []
    for choice in sample.choices:
        candidate = original.copy()
        candidate.paste(
            tag_image(sample.category, choice, TARGET_FRAME, SynthKnobs()), (int(t.x1), int(t.y1))
        )
        image = render_view(candidate, None if view == "input" else region, TINY_BUDGET)
        sx, sy = image.width / region.width, image.height / region.height
        box = (
            int((t.x1 - region.x1) * sx),
            int((t.y1 - region.y1) * sy),
            int(np.ceil((t.x2 - region.x1) * sx)),
            int(np.ceil((t.y2 - region.y1) * sy)),
        )
        renders.append(np.asarray(image.crop(box).convert("L"), dtype=np.float32))
    return min(float(np.sqrt(((a - b) ** 2).mean())) for a, b in itertools.combinations(renders, 2))


@pytest.mark.parametrize("kind", ["stripes", "glyph", "dots"])
def test_the_answer_detail_is_lost_at_the_tiny_budget_and_plain_in_a_crop(kind):
    knobs = SynthKnobs(kinds=(kind,))
    samples = [synth_choice_sample(7, i, knobs) for i in range(4)]
    shrunk = max(_detail_contrast(s, "input") for s in samples)
    cropped = min(_detail_contrast(s, "crop") for s in samples)
    if kind == "stripes":
        # equal ink per orientation: after the ~4x shrink the options differ by under 2 grey levels
        assert shrunk < 2.0 and cropped > 50.0
    elif kind == "glyph":
        assert cropped > 2 * shrunk
    else:
        # a dot count is carried as ink, which no averaging removes: weaker hiding than stripes (README)
        assert shrunk < 5.0 and cropped > 1.5 * shrunk


def test_knobs_are_validated_with_every_problem_listed():
    with pytest.raises(ValueError, match="options must be 2..5") as err:
        SynthKnobs(options=9, tag_size=2)
    assert "tag_size" in str(err.value)


def test_grounding_sample_puts_the_named_glyph_in_the_target_image():
    s = synth_grounding_sample(0, 3)
    assert 2 <= len(s.images) <= 4
    target = int(s.answer) - 1
    box = s.target_box
    image = s.images[target]
    x, y = int(box.x1 * image.width) + 2, int(box.y1 * image.height) + 2
    assert image.getpixel((x, y)) == TARGET_FRAME


def test_grounding_without_distractors_tags_only_the_target_image_in_a_grid_cell():
    knobs = SynthKnobs(distractors=0, grid=4, clutter=0, position_cue=True, min_side=512, max_side=512)
    s = synth_grounding_sample(0, 3, knobs)
    target = int(s.answer) - 1
    for i, image in enumerate(s.images):
        red = (np.asarray(image) == TARGET_FRAME).all(axis=-1).sum()
        assert (red > 100) == (i == target)  # the frame's pixels, in the target image only
    centre = ((s.target_box.x1 + s.target_box.x2) / 2 * 4) % 1  # a cell centre in a 4x4 grid
    assert centre == pytest.approx(0.5, abs=0.02)


def test_grounding_images_take_their_sides_from_the_knobs():
    assert all(448 <= i.width == i.height <= 896 for i in synth_grounding_sample(0, 3).images)
    fixed = synth_grounding_sample(0, 3, SynthKnobs(tag_size=128, grid=4, grounding_sides=(1024, 1024)))
    assert {i.size for i in fixed.images} == {(1024, 1024)}
    assert fixed.target_box.width == pytest.approx(128 / 1024)
    cued = synth_grounding_sample(0, 3, SynthKnobs(grid=4, clutter=0, position_cue=True, index_cue=True))
    greens = [np.asarray(i)[..., 1].mean() for i in cued.images]
    assert greens == pytest.approx([90 + 40 * k for k in range(len(cued.images))], abs=3)
    with pytest.raises(ValueError, match="needs position_cue"):
        SynthKnobs(index_cue=True)
    with pytest.raises(ValueError, match="does not fit a grounding image's cell of 112 px"):
        synth_grounding_sample(0, 3, SynthKnobs(tag_size=128, grid=4))


def test_grounding_prompts_hold_as_many_images_as_the_knobs_say():
    counts = {len(synth_grounding_sample(0, i).images) for i in range(40)}
    assert counts == {2, 3, 4}  # the default, drawn as before the knob existed
    single = synth_grounding_sample(0, 5, SynthKnobs(grounding_images=(1, 1)))
    assert len(single.images) == 1 and single.answer == "1"
    with pytest.raises(ValueError, match="grounding_images is MIN,MAX"):
        SynthKnobs(grounding_images=(0, 2))
    with pytest.raises(ValueError, match="index_cue tells 4 images apart"):
        SynthKnobs(grid=4, clutter=0, position_cue=True, index_cue=True, grounding_images=(2, 5))


def test_counting_sample_has_one_point_per_red_disc():
    s = synth_counting_sample(0, 1)
    assert int(s.answer) == len(s.points) >= 1
    for x, y in s.points:
        assert s.images[0].getpixel((int(x), int(y))) == TARGET_FRAME


def test_write_synthetic_writes_a_readable_dataset_folder(tmp_path):
    write_synthetic(tmp_path, 3, 0, progress=False)
    records = list(read_prompts(tmp_path))
    assert [r.id for r in records] == ["synth-choice-0-0", "synth-choice-0-1", "synth-choice-0-2"]
    store = open_store(tmp_path)
    assert all(r.kind is TaskKind.MULTIPLE_CHOICE and r.images[0] in store for r in records)
    assert isinstance(store.get(records[0].images[0]), Image.Image)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["n"] == 3 and meta["knobs"]["tag_size"] == 64
    write_synthetic(tmp_path / "g", 2, 0, task="grounding", progress=False)
    assert next(read_prompts(tmp_path / "g")).kind is TaskKind.MULTI_IMAGE_GROUNDING


def _reproduce_knobs() -> SynthKnobs:
    from runtime.config import load_sft_config

    return load_sft_config("configs/reproduce/sft.yaml").data.knobs()


def test_grid_layout_centres_tags_in_distinct_cells_of_a_square_image():
    knobs = SynthKnobs(min_side=1024, max_side=1024, tag_size=128, grid=4, clutter=0)
    for index in range(5):
        s = synth_choice_sample(0, index, knobs)
        assert s.images[0].size == (1024, 1024) and s.target_box == s.tags[0].box
        cells = set()
        for tag in s.tags:
            cx, cy = (tag.box.x1 + tag.box.x2) / 2, (tag.box.y1 + tag.box.y2) / 2
            assert cx % 256 == 128 and cy % 256 == 128 and tag.box.width == 128
            cells.add((cx // 256, cy // 256))
        assert len(cells) == len(s.tags) == 4
    with pytest.raises(ValueError, match="no room for 5 tags"):
        SynthKnobs(grid=2, distractors=4)
    with pytest.raises(ValueError, match="clutter must be 0"):
        SynthKnobs(position_cue=True)


def test_the_position_cue_ramps_red_across_and_blue_down():
    s = synth_choice_sample(
        0, 0, SynthKnobs(min_side=1024, max_side=1024, grid=4, clutter=0, position_cue=True)
    )
    pixels = np.asarray(s.images[0], dtype=np.float32)
    corners = {(x, y): pixels[y : y + 16, x : x + 16].mean(axis=(0, 1)) for x in (0, 1008) for y in (0, 1008)}
    assert corners[(1008, 0)][0] - corners[(0, 0)][0] > 100  # red grows left to right
    assert corners[(0, 1008)][2] - corners[(0, 0)][2] > 100  # blue grows top to bottom
    assert abs(corners[(1008, 1008)][1] - corners[(0, 0)][1]) < 5  # green is flat


def test_the_reproduce_set_hides_the_stripes_at_its_budget_and_shows_them_in_one_cell():
    """configs/reproduce/sft.yaml: the 224x224 input averages the stripes away; the crop of the tag's grid
    cell (the box the cold start teaches) shows them."""
    knobs = _reproduce_knobs()
    budget = PixelBudget(224 * 224, 224 * 224)
    sample = synth_choice_sample(5, 0, knobs)
    tag = sample.target_box
    cell = 1024 // knobs.grid
    region = Box(tag.x1 - (cell - tag.width) / 2, tag.y1 - (cell - tag.height) / 2, 0, 0)
    region = Box(region.x1, region.y1, region.x1 + cell, region.y1 + cell)
    inside = {"input": [], "crop": []}
    for value in sample.choices:
        image = sample.images[0].copy()
        image.paste(tag_image("stripes", value, TARGET_FRAME, knobs), (int(tag.x1), int(tag.y1)))
        for view, where in (("input", Box(0, 0, 1024, 1024)), ("crop", region)):
            shown = render_view(image, None if view == "input" else where, budget)
            s = shown.width / where.width
            box = [int((tag.x1 - where.x1 + 12) * s), int((tag.y1 - where.y1 + 12) * s)]
            box += [int((tag.x2 - where.x1 - 12) * s), int((tag.y2 - where.y1 - 12) * s)]
            inside[view].append(np.asarray(shown.crop(box).convert("L"), dtype=np.float32))

    def contrast(views):
        return min(float(np.sqrt(((a - b) ** 2).mean())) for a, b in itertools.combinations(views, 2))

    assert contrast(inside["input"]) < 3.0 and contrast(inside["crop"]) > 50.0


LOOKS = SynthKnobs(min_side=2048, max_side=2048, grid=4, stripe_width=1, clutter=0, position_cue=True)
VIEW = PixelBudget(224 * 224, 224 * 224)


def _stripe_contrast(sample, region: Box) -> float:
    """Grey-level spread inside the middle of the target as the model sees it with `region` in view: ~0 when
    the stripes average to a flat grey, tens of levels when they show."""
    shown = render_view(sample.images[0], region, VIEW)
    t, s = sample.target_box, shown.width / region.width
    inner = [t.x1 + 0.3 * t.width, t.y1 + 0.3 * t.height, t.x2 - 0.3 * t.width, t.y2 - 0.3 * t.height]
    box = [int((inner[0] - region.x1) * s), int((inner[1] - region.y1) * s)]
    box += [int((inner[2] - region.x1) * s) + 1, int((inner[3] - region.y1) * s) + 1]
    return float(np.asarray(shown.crop(box).convert("L"), dtype=np.float32).std())


@pytest.mark.parametrize("look", [0, 1, 2])
def test_a_looks_question_shows_its_stripes_only_after_as_many_crops_as_it_needs(look):
    knobs = SynthKnobs(**{**LOOKS.__dict__, "looks": (look,)})
    sample = synth_looks_sample(3, 0, knobs)
    assert sample.category == f"look{look}"
    panel = sample.tags[0]  # the red panel; look2's red tag sits inside it
    assert panel.frame == "red" and sample.choices[LETTERS.index(sample.answer)] == panel.value
    t = sample.target_box
    zooms = [Box(0, 0, 2048, 2048), panel.box, Box(t.x1 - 16, t.y1 - 16, t.x2 + 16, t.y2 + 16)]
    contrast = [_stripe_contrast(sample, region) for region in zooms[: look + 1]]
    assert all(c < 2.0 for c in contrast[:-1]) and contrast[-1] > 40.0, contrast
    if look == 2:  # the red tag inside the red panel: one per frame colour, only the red one answers right
        inner = sample.tags[4:]
        assert [x.frame for x in inner] == ["red", "blue", "green", "orange"]
        assert inner[0].box == t and all(x.value != panel.value for x in inner[1:])


def _dark_run(sample) -> int:
    """The width in original pixels of the red panel's stripes, read across them through its middle."""
    panel = sample.tags[0]
    b = panel.box
    pixels = np.asarray(sample.images[0].convert("L"))[int(b.y1) : int(b.y2), int(b.x1) : int(b.x2)]
    middle = pixels.shape[0] // 2
    line = (pixels[:, middle] if panel.value == "horizontal" else pixels[middle])[32:-32] == 0
    runs, length = [], 0
    for dark in line:
        if dark:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return int(np.median(runs))


@pytest.mark.parametrize("look", [0, 1, 2])
def test_look0_factor_coarsens_the_look0_stripes_and_nothing_else(look):
    fine, coarse = (SynthKnobs(**{**LOOKS.__dict__, "looks": (look,), "look0_factor": f}) for f in (1, 2))
    a, b = synth_looks_sample(3, 0, fine), synth_looks_sample(3, 0, coarse)
    same = np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert same == (look > 0) and (a.choices, a.answer, a.tags) == (b.choices, b.answer, b.tags)
    if look == 0:
        assert (_dark_run(a), _dark_run(b)) == (16, 32)
        assert _stripe_contrast(b, Box(0, 0, 2048, 2048)) > _stripe_contrast(a, Box(0, 0, 2048, 2048))
    with pytest.raises(ValueError, match="look0_factor must be 1..8"):
        SynthKnobs(look0_factor=0)


def test_look0_alone_hides_the_distractors_stripes_in_the_whole_view_only():
    knobs = SynthKnobs(**{**LOOKS.__dict__, "looks": (0,), "look0_factor": 2, "look0_alone": True})
    sample = synth_looks_sample(3, 1, knobs)
    whole = Box(0, 0, 2048, 2048)

    def contrast(tag, region):  # as _stripe_contrast, about any panel
        return _stripe_contrast(dataclasses.replace(sample, target_box=tag.box), region)

    red, *distractors = sample.tags[:4]
    assert contrast(red, whole) > 40.0 and all(contrast(t, whole) < 2.0 for t in distractors)
    assert all(contrast(t, t.box) > 40.0 for t in distractors)  # a crop of one still reads it (wrong)
    plain = synth_looks_sample(3, 1, SynthKnobs(**{**knobs.__dict__, "look0_alone": False}))
    assert (plain.choices, plain.answer, plain.tags) == (sample.choices, sample.answer, sample.tags)


def test_looks_questions_spread_over_the_looks_asked_for_and_distractor_panels_answer_wrong():
    samples = [synth_looks_sample(1, i, LOOKS) for i in range(12)]
    assert {s.category for s in samples} == {"look0", "look1", "look2"}
    for s in samples:
        panels = [x for x in s.tags if x.box.width == 512]
        assert [x.frame for x in panels] == ["red", "blue", "green", "orange"]
        assert all(x.value != panels[0].value for x in panels[1:])
    with pytest.raises(ValueError, match="set grid"):
        synth_looks_sample(1, 0, SynthKnobs())
    with pytest.raises(ValueError, match="looks must be"):
        SynthKnobs(looks=(3,))
