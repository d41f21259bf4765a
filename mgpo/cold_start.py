"""The cold-start skills a real base model brings from pre-training, taught to the tiny model by SFT.

Two skills, each on its own prompt, never the combined task:
- grounding: the whole (shrunk) image and a description ("the tag with the blue frame") -> a box around that
  tag, in the input image's pixels, as MGPO's JSON. Every tag of an image is asked for, the red one no more
  often than the others, and no question is in the prompt;
- recognition: a close-up of one tag (cut from the original, as a crop would be) and a question about it ->
  the letter of the right option in \\boxed{}.
What RL must discover is the link: for THIS question, ground the red tag, then answer from the crop. No
example shows a question together with the right box, and no answer is ever supervised with the whole image.
Optionally (`format_example`) the MGPO turn-1 prompt with the real question is answered with a box around a
tag drawn at random a set share of the time, else a guessed letter: the turn-1 format at a known rate, on
every seed, and where to put the box still RL's to find.

A box must have sides over 28 input pixels to be valid (MGPO's rule), and a tag is ~14 input pixels at the
default budget, so the taught box is `cells` x `cells` cells of Qwen2.5-VL's 28-pixel merged-patch grid around
the tag's centre: corners on multiples of 28 (one visual token per cell, so a small model can learn to name
its position); a 2x2 box always contains a tag of up to 28 input pixels.
"""

from __future__ import annotations

import dataclasses
import random
from typing import NamedTuple

from PIL import Image

from mgpo.boxes import Box
from mgpo.crop import render_view
from mgpo.data.synth import SynthSample, Tag
from mgpo.resize import FACTOR, PixelBudget, input_size
from mgpo.templates import IM_END, LETTERS, MGPO, first_prompt, format_choices, single_prompt

GROUNDING_SYSTEM = "You locate objects in images."
GROUNDING_PROMPT = (
    "Where is the tag with the {frame} frame? Reply with a box around it as JSON:\n"
    '```json\n[{{"bbox_2d": [x1, y1, x2, y2], "label": "tag"}}]\n```'
)
RECOGNITION_SYSTEM = "You answer questions about close-up images."
RECOGNITION_PROMPT = (
    "This is a close-up.\nQuestion: {question}\nOptions:\n{choices}\n"
    "Put the letter of the right option in \\boxed{{}}."
)
# The product's own turn wording, with a description where the question goes: a base model's skills are not
# tied to one prompt, and a tiny model that knows only GROUNDING_PROMPT answers the MGPO turn-1 prompt with
# a letter, never a box (measured: no valid box in 25 RL steps x 32 samples), so RL has nothing to reinforce.
# Some descriptions are phrased as questions (about where the tag is, never about its detail), as the
# question is what fills that slot at RL time.
DESCRIPTIONS = (
    "Find the tag with the {frame} frame.",
    "Where is the tag with the {frame} frame?",
    "Which part of the image shows the tag with the {frame} frame?",
)
RECOGNITION_IN_CONTEXT_PROMPT = (
    "The second image is part of the first, enlarged.\nQuestion: {question}\nOptions:\n{choices}\n"
    "Put the letter of the right option in \\boxed{{}}."
)


class Example(NamedTuple):
    """One supervised example: the prompt text (with image placeholders), its images, the reply text."""

    skill: str  # "grounding" | "recognition"
    prompt: str
    images: tuple[Image.Image, ...]
    reply: str
    target: str  # what is right: the taught box's JSON (grounding) or the option letter (recognition)
    # a multi-turn exchange (mgpo.data.distill): every piece after the prompt, (text, trained); `images` are
    # then all of its images, `reply` and `target` its first model turn (what a greedy evaluation generates)
    pieces: tuple[tuple[str, bool], ...] = ()


def around(box: Box, min_side: float, bounds: tuple[float, float]) -> Box:
    """`box` grown to at least `min_side` per side around its centre, shifted to stay inside `bounds`."""
    width, height = bounds
    w, h = max(box.width, min_side), max(box.height, min_side)
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    x1 = min(max(0.0, cx - w / 2), width - w)
    y1 = min(max(0.0, cy - h / 2), height - h)
    return Box(x1, y1, x1 + w, y1 + h)


def taught_box(tag: Tag, original_size: tuple[int, int], budget: PixelBudget, cells: int = 2) -> Box:
    """The box a grounding example teaches for `tag`: `cells` x `cells` grid cells of the input around it."""
    w_in, h_in = input_size(*original_size, budget)
    side = cells * FACTOR

    def start(centre: float, limit: int) -> float:
        first = round(centre / FACTOR) - cells // 2 if cells % 2 == 0 else int(centre // FACTOR) - cells // 2
        return float(min(max(0, first * FACTOR), limit - side))

    cx = (tag.box.x1 + tag.box.x2) / 2 * w_in / original_size[0]
    cy = (tag.box.y1 + tag.box.y2) / 2 * h_in / original_size[1]
    x1, y1 = start(cx, w_in), start(cy, h_in)
    return Box(x1, y1, x1 + side, y1 + side)


def box_json(box: Box, label: str = "tag") -> str:
    return f'```json\n[{{"bbox_2d": [{box.x1:.0f}, {box.y1:.0f}, {box.x2:.0f}, {box.y2:.0f}], "label": "{label}"}}]\n```'


def grounding_example(
    sample: SynthSample,
    tag: Tag,
    budget: PixelBudget,
    cells: int,
    product_wording: bool = False,
    phrasing: int = 0,
) -> Example:
    """The shrunk image and a description of `tag` -> its box; in GROUNDING_PROMPT's words, or in the MGPO
    turn-1 template's (`product_wording`) with the description where the question would be."""
    original = sample.images[0]
    box = taught_box(tag, original.size, budget, cells)
    if product_wording:
        prompt = first_prompt(MGPO, DESCRIPTIONS[phrasing].format(frame=tag.frame), ())
        label = "key image area"  # the paper's label (its Figure 8)
    else:
        prompt, label = single_prompt(GROUNDING_PROMPT.format(frame=tag.frame), 1, GROUNDING_SYSTEM), "tag"
    reply = box_json(box, label) + IM_END
    return Example("grounding", prompt, (render_view(original, None, budget),), reply, box_json(box, label))


def question_about(sample: SynthSample, tag: Tag) -> str:
    """The sample's question, asked about `tag` (the questions name the red frame)."""
    return sample.question.replace("red frame", f"{tag.frame} frame")


def close_up_region(tag: Tag, original_size: tuple[int, int], scale: float, rng: random.Random) -> Box:
    """A region around `tag` as a crop would cut it: `scale` times its side, the tag off-centre a little."""
    side = tag.box.width * scale
    slack = (side - tag.box.width) / 2
    cx = (tag.box.x1 + tag.box.x2) / 2 + rng.uniform(-0.5, 0.5) * slack
    cy = (tag.box.y1 + tag.box.y2) / 2 + rng.uniform(-0.5, 0.5) * slack
    region = around(Box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), side, original_size)
    return Box(*(float(int(v)) for v in region))


def recognition_example(
    sample: SynthSample,
    tag: Tag,
    budget: PixelBudget,
    scale: float,
    rng: random.Random,
    in_context: bool = False,
    product_wording: bool = False,
) -> Example:
    """A close-up of `tag` alone, or (`in_context`) after the whole shrunk image, and a question about it;
    in context, optionally in the MGPO turn-2 template's words."""
    original = sample.images[0]
    region = close_up_region(tag, original.size, scale, rng)
    letter = LETTERS[sample.choices.index(tag.value)]
    template = RECOGNITION_IN_CONTEXT_PROMPT if in_context else RECOGNITION_PROMPT
    system, intro = RECOGNITION_SYSTEM, ""
    if in_context and product_wording:
        template, system, intro = MGPO.after_crop, MGPO.system, MGPO.crop_intro
    text = template.format(question=question_about(sample, tag), choices=format_choices(sample.choices))
    close_up = render_view(original, region, budget)
    images = (render_view(original, None, budget), close_up) if in_context else (close_up,)
    prompt = single_prompt(text, len(images), system, intro)
    return Example("recognition", prompt, images, f"\\boxed{{{letter}}}{IM_END}", letter)


def format_example(
    sample: SynthSample,
    budget: PixelBudget,
    cells: int,
    rng: random.Random,
    box_share: float,
    on_target: bool = False,
) -> Example:
    """The MGPO turn-1 prompt with the sample's own question -> (`box_share` of the time) a box around one of
    its tags drawn at random (`on_target`: around the tag the question is about), or a guessed option letter.
    Without it, how often the cold-start model boxes a question depended on the seed alone (0.0, 0.13 and
    0.69 of turn-1 replies at the start of RL, three seeds): RL then had no format to reinforce, or no
    grounding left to discover."""
    prompt = first_prompt(MGPO, sample.question, sample.choices)
    if rng.random() < box_share:
        tags = [t for t in sample.tags if t.box == sample.target_box] if on_target else sample.tags
        box = taught_box(rng.choice(tags), sample.images[0].size, budget, cells)
        target = box_json(box, "key image area")
    else:
        target = f"\\boxed{{{rng.choice(LETTERS[: len(sample.choices)])}}}"
    return Example("format", prompt, (render_view(sample.images[0], None, budget),), target + IM_END, target)


def skill_examples(
    sample: SynthSample,
    budget: PixelBudget,
    cells: int,
    scale: tuple[float, float],
    rng: random.Random,
    grounding_frames: tuple[str, ...] | None = None,
    product_wording: float = 0.5,
) -> list[Example]:
    """Both skills on every tag of one multiple-choice sample (close-ups alone or in context, by chance);
    grounding only for tags whose frame is in `grounding_frames`, when given. A `product_wording` share of
    the grounding examples is in the MGPO turn-1 wording; recognition is in either wording, half and half."""
    out = []
    for tag in sample.tags:
        if grounding_frames is None or tag.frame in grounding_frames:
            wording, phrasing = rng.random() < product_wording, rng.randrange(len(DESCRIPTIONS))
            out.append(grounding_example(sample, tag, budget, cells, wording, phrasing))
        in_context, wording = rng.random() < 0.5, rng.random() < 0.5
        out.append(recognition_example(sample, tag, budget, rng.uniform(*scale), rng, in_context, wording))
    return out


def _inside(sample: SynthSample, region: Box, tags: list[Tag]) -> SynthSample:
    """`region` of the sample's original as an image of its own, with `tags` in its pixels: what a crop of
    that region shows (render_view of the piece equals render_view of the original with the region)."""
    piece = sample.images[0].crop((int(region.x1), int(region.y1), int(region.x2), int(region.y2)))
    moved = [
        Tag(
            t.frame,
            Box(t.box.x1 - region.x1, t.box.y1 - region.y1, t.box.x2 - region.x1, t.box.y2 - region.y1),
            t.value,
        )
        for t in tags
    ]
    return SynthSample(
        (piece,), sample.question, sample.choices, sample.answer, None, sample.category, tags=tuple(moved)
    )


def zoom_skill_examples(
    sample: SynthSample,
    budget: PixelBudget,
    cells: int,
    rng: random.Random,
    product_wording: float = 0.5,
    grounding_frames: tuple[str, ...] | None = None,
    whole_view_read_frames: tuple[str, ...] | None = None,
) -> list[Example]:
    """Both skills at every zoom of a looks sample (mgpo.data.synth.synth_looks_sample), each where a crop
    would need it: every panel grounded in the whole view; for a look2 sample, every small tag of the red
    panel grounded in the panel's own view (a crop of the panel's cell); every answer read at the zoom its
    stripes show at: a look0 panel in the whole view, a look1 panel in a crop of its cell, a look2 tag in a
    crop of its cell inside the panel (+-10% around each). Grounding only for `grounding_frames`, and a
    look0 panel read in the whole view only for `whole_view_read_frames`, if given: there every panel
    shows, and which one a question means is told by its frame's colour alone."""
    look = int(sample.category.removeprefix("look"))
    panels, _ = _panels(sample)
    side = sample.images[0].width
    out = []
    grounds = [t for t in sample.tags if grounding_frames is None or t.frame in grounding_frames]
    for tag in panels:
        if tag in grounds:
            wording, phrasing = rng.random() < product_wording, rng.randrange(len(DESCRIPTIONS))
            out.append(grounding_example(sample, tag, budget, cells, wording, phrasing))
        if look == 1:
            out.append(_read(sample, tag, budget, 1.0, rng))  # in a crop of the panel's cell
        elif look == 0 and (whole_view_read_frames is None or tag.frame in whole_view_read_frames):
            out.append(_read(sample, tag, budget, side / tag.box.width, rng))  # in the whole image
    view = panel_view(sample)
    if view is not None:
        red = panels[0]
        cell = red.box.width / (side / red.box.width)  # the panel is laid out on the image's own grid
        for tag in view.tags:
            if grounding_frames is None or tag.frame in grounding_frames:
                wording, phrasing = rng.random() < product_wording, rng.randrange(len(DESCRIPTIONS))
                out.append(grounding_example(view, tag, budget, cells, wording, phrasing))
            out.append(_read(view, tag, budget, cell / tag.box.width, rng))
    return out


def _panels(sample: SynthSample) -> tuple[list[Tag], list[Tag]]:
    """A looks sample's panels (the red one first) and the small tags inside the red one (look2 only)."""
    panels = [t for t in sample.tags if t.box.width == sample.tags[0].box.width]
    return panels, list(sample.tags[len(panels) :])


def panel_view(sample: SynthSample) -> SynthSample | None:
    """A look2 sample as its red panel's own view, the question's tag its target: the image a second look
    is asked about (`mgpo data distill` gives the teacher its first crop as an image of its own). None for
    look0/look1 samples, whose question needs no look inside a panel."""
    panels, inner = _panels(sample)
    if not inner:
        return None
    view = _inside(sample, panels[0].box, inner)
    # the red tag: synth_looks_sample lists it first among the panel's tags
    return dataclasses.replace(view, target_box=view.tags[0].box)


def _read(sample: SynthSample, tag: Tag, budget: PixelBudget, scale: float, rng: random.Random) -> Example:
    """A recognition example at about `scale` tag sides (never more than the whole image)."""
    in_context, wording = rng.random() < 0.5, rng.random() < 0.5
    scale = min(scale * rng.uniform(0.9, 1.1), sample.images[0].width / tag.box.width)
    return recognition_example(sample, tag, budget, scale, rng, in_context, wording)
