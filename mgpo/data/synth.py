"""A V*-like synthetic high-resolution set, a multi-image grounding set, a counting set, and a set whose
questions need 0, 1 or 2 looks closer (`synth_looks_sample`).

Multiple choice (`synth_choice_sample`): a large cluttered image with several framed "tags"; the question is
about the ONE tag with a red frame. The red frame stays visible after the image is shrunk to a small pixel
budget (so the region can be found), but what answers the question does not: a thin glyph, 2-px stripes or
tiny dots blur away at ~4x downscale and are plain in an enlarged crop. Distractor tags in other frame
colours carry other answers, so a crop of the wrong tag answers wrong. The true box is kept for evaluation.
Everything is a pure function of (seed, index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mgpo.boxes import Box
from mgpo.templates import LETTERS

GLYPHS = "ACEFHKLMNPRTUVWXYZ2345789"
STRIPES = ("horizontal", "vertical", "diagonal rising", "diagonal falling")
DOT_COUNTS = ("1", "2", "3", "4", "5")
TARGET_FRAME = (230, 20, 20)
DISTRACTOR_FRAMES = ((20, 90, 230), (20, 170, 60), (230, 170, 20), (140, 40, 200))
FRAME_NAMES = ("red", "blue", "green", "orange", "purple")  # TARGET_FRAME, then DISTRACTOR_FRAMES
KINDS = ("glyph", "stripes", "dots")
QUESTIONS = {
    "glyph": "What character is printed on the tag with the red frame?",
    "stripes": "Which way do the stripes on the tag with the red frame run?",
    "dots": "How many dots are on the tag with the red frame?",
}


@dataclass(frozen=True)
class SynthKnobs:
    """What shapes the multiple-choice set. Defaults: detail unreadable at 256*28*28 pixels, readable in a crop."""

    min_side: int = 1536  # original image sides are drawn from [min_side, max_side]
    max_side: int = 2048
    tag_size: int = 64  # side of a tag in original pixels (frame included)
    frame: int = 7  # frame thickness: thick enough to survive the downscale
    distractors: int = 3  # other tags with other frame colours
    clutter: int = 150  # background shapes
    options: int = 4  # choices per question (2..5)
    shuffle_options: bool = True  # False: options in a fixed order (a letter always means the same value)
    # stripes: `stripe_width` dark pixels every `stripe_period`. Both 1/3 and 2/4 average to a flat grey at the
    # default budget (~4.5x downscale: pixel std 0.5 of 255 inside the tag); 2/4 is easier to read up close
    # for a tiny model (learned in ~700 SFT steps where 1/3 was not in 1000). 3/6 survives the downscale.
    stripe_width: int = 1
    stripe_period: int = 3
    kinds: tuple[str, ...] = KINDS
    # grid > 0: a square image, tags centred in distinct cells of a grid x grid layout (a small model can name
    # a cell; anywhere-placement needs the fine localisation a real base model brings from pre-training).
    grid: int = 0
    # The background ramps red left to right and blue top to bottom, the same in every image: where a patch
    # is shows in its own pixels, as a tiny model cannot learn absolute position from mRoPE alone in minutes.
    position_cue: bool = False
    # Multi-image grounding: each image's side is drawn from this range (2-4 images share one prompt, so
    # they are smaller than the multiple-choice originals).
    grounding_sides: tuple[int, int] = (448, 896)
    # Multi-image grounding: how many images a prompt holds, MIN,MAX (1 is the one-image grounding skill, a
    # first step of a curriculum towards several).
    grounding_images: tuple[int, int] = (2, 4)
    # Multi-image grounding with position_cue: the background's green level tells the image's place in the
    # prompt (90, 130, 170, 210 for images 1-4): a 2-layer model has no other way to tell one image's patches
    # from another's (mRoPE is relative). Without it, 1000 SFT steps named one image for every prompt; with
    # it, 1500 did too (README, Results): needed, not enough.
    index_cue: bool = False
    # The looks task: which numbers of looks closer (0, 1, 2) its questions need, drawn uniformly.
    looks: tuple[int, ...] = (0, 1, 2)
    # The looks task: look0 stripes this many times wider than grid^2 x stripe_width. 1: every look shows its
    # stripes at the same scale (~1.75 px of a 224-px view), which the xs model reads about half the time in
    # the whole view; 2: plain in the whole view (3.5 px), as a question that needs no closer look is.
    look0_factor: int = 1
    # The looks task: a look0 question's distractor panels striped as a look1 question's (flat grey in the
    # whole view, readable in a crop of one): only the red panel's stripes show, so answering from the whole
    # view needs no telling the panels apart by their frames' colours, which the xs model does not learn
    # (it reads the red panel among four in the whole view 0.36-0.43 of the time, a panel alone in a crop
    # 0.93; README, Results).
    look0_alone: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not 256 <= self.min_side <= self.max_side <= 8192:
            problems.append(f"need 256 <= min_side <= max_side <= 8192, got {self.min_side}..{self.max_side}")
        if not 24 <= self.tag_size <= self.min_side // 4:
            problems.append(f"tag_size must be in 24..min_side/4, got {self.tag_size}")
        if not 2 <= self.options <= 5:
            problems.append(f"options must be 2..5, got {self.options}")
        if not set(self.kinds) <= set(KINDS) or not self.kinds:
            problems.append(f"kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if self.grid and not 2 <= self.grid <= 16:
            problems.append(f"grid must be 0 (free placement) or 2..16, got {self.grid}")
        if self.grid and self.grid**2 < self.distractors + 1:
            problems.append(f"a {self.grid}x{self.grid} grid has no room for {self.distractors + 1} tags")
        if self.index_cue and not self.position_cue:
            problems.append("index_cue colours position_cue's background: it needs position_cue")
        if self.position_cue and self.clutter:
            problems.append(f"position_cue paints over the background: clutter must be 0, got {self.clutter}")
        if self.grid and self.tag_size > self.min_side // self.grid:
            problems.append(
                f"tag_size {self.tag_size} does not fit a cell of {self.min_side // self.grid} px"
            )
        sides = tuple(self.grounding_sides)
        if len(sides) != 2 or not 256 <= sides[0] <= sides[1] <= 8192:
            problems.append(f"grounding_sides is MIN,MAX with 256 <= MIN <= MAX <= 8192, got {sides}")
        counts = tuple(self.grounding_images)
        if len(counts) != 2 or not 1 <= counts[0] <= counts[1] <= len(GLYPHS):
            problems.append(
                f"grounding_images is MIN,MAX with 1 <= MIN <= MAX <= {len(GLYPHS)}, got {counts}"
            )
        elif self.index_cue and counts[1] > 4:  # checked after the shape: an empty pair has no MAX
            problems.append("index_cue tells 4 images apart: grounding_images MAX must be <= 4")
        if not self.looks or not set(self.looks) <= {0, 1, 2}:
            problems.append(f"looks must be a non-empty subset of 0, 1, 2, got {self.looks}")
        if not 1 <= self.look0_factor <= 8:
            problems.append(f"look0_factor must be 1..8, got {self.look0_factor}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class SynthSample:
    """A generated sample before it is stored: pixels, question, choices, answer letter, hidden box."""

    images: tuple[Image.Image, ...]
    question: str
    choices: tuple[str, ...]
    answer: str
    target_box: Box | None
    category: str
    points: tuple[tuple[float, float], ...] = ()
    tags: tuple[Tag, ...] = ()  # every tag drawn (multiple choice): for the cold-start skills, never for RL


class Tag(NamedTuple):
    frame: str  # colour name, FRAME_NAMES
    box: Box  # original pixels
    value: str  # what its detail shows


def _rng(seed: int, index: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, salt])


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    # Muted colours only: nothing in the clutter may look like the red target frame.
    r, g, b = (int(v) for v in rng.integers(40, 200, size=3))
    if r > g + 60 and r > b + 60:
        r = (g + b) // 2
    return r, g, b


def _background(width: int, height: int, clutter: int, rng: np.random.Generator) -> Image.Image:
    top, bottom = rng.integers(120, 230, size=3), rng.integers(120, 230, size=3)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp) + rng.normal(0, 6, size=(height, 1, 3))
    pixels = np.broadcast_to(pixels, (height, width, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(clutter):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = (int(v) for v in rng.integers(20, max(40, width // 8), size=2))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.rectangle((x, y, x + w, y + h), fill=_colour(rng))
        elif shape == 1:
            draw.ellipse((x, y, x + w, y + h), fill=_colour(rng))
        else:
            draw.line((x, y, x + w, y + h), fill=_colour(rng), width=int(rng.integers(2, 8)))
    return image


def _position_background(
    width: int, height: int, rng: np.random.Generator, green: float = 150.0
) -> Image.Image:
    x = np.linspace(70.0, 200.0, width, dtype=np.float32)[None, :]
    y = np.linspace(70.0, 200.0, height, dtype=np.float32)[:, None]
    pixels = np.stack(np.broadcast_arrays(x, np.full_like(x * y, green), y), axis=-1)
    pixels = pixels + rng.normal(0, 4, size=(height, width, 1))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def _cell_spots(side: int, size: int, grid: int, count: int, rng: np.random.Generator) -> list[Box]:
    """`count` tag boxes centred in distinct cells of a `grid` x `grid` layout of a square image."""
    cells = rng.choice(grid * grid, size=count, replace=False)
    cell = side / grid
    spots = []
    for c in cells:
        cx, cy = (int(c) % grid + 0.5) * cell, (int(c) // grid + 0.5) * cell
        x, y = float(round(cx - size / 2)), float(round(cy - size / 2))
        spots.append(Box(x, y, x + size, y + size))
    return spots


# Dice-face dot layouts on a 3x3 grid: the same count always looks the same.
DICE = {
    "1": ((1, 1),),
    "2": ((0, 0), (2, 2)),
    "3": ((0, 0), (1, 1), (2, 2)),
    "4": ((0, 0), (0, 2), (2, 0), (2, 2)),
    "5": ((0, 0), (0, 2), (1, 1), (2, 0), (2, 2)),
}


def _stripes(size: int, value: str, width: int = 1, period: int = 3) -> np.ndarray:
    """`width`-px black lines every `period` px. Every orientation has the same ink, so a downscale that
    averages pixels leaves the same grey whatever the answer: the orientation is gone, not just blurred."""
    y, x = np.mgrid[0:size, 0:size]
    phase = {"horizontal": y, "vertical": x, "diagonal rising": x + y, "diagonal falling": x - y}[value]
    return phase % period < width


def _draw_detail(tag: Image.Image, kind: str, value: str, inner: int, knobs: SynthKnobs) -> None:
    size = tag.width
    if kind == "glyph":
        font = _font(int(size * 0.28))
        ImageDraw.Draw(tag).text((size / 2, size / 2), value, fill=(0, 0, 0), font=font, anchor="mm")
    elif kind == "stripes":
        pixels = np.asarray(tag).copy()
        pixels[_stripes(size, value, knobs.stripe_width, knobs.stripe_period)] = 0
        tag.paste(Image.fromarray(pixels))
    else:
        draw = ImageDraw.Draw(tag)
        radius = max(1, size // 48)
        cell = (size - 2 * inner) / 3
        for col, row in DICE[value]:
            cx, cy = inner + (col + 0.5) * cell, inner + (row + 0.5) * cell
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(0, 0, 0))


def tag_image(kind: str, value: str, frame_colour: tuple[int, int, int], knobs: SynthKnobs) -> Image.Image:
    """One tag: a light square with the detail inside and a thick coloured frame."""
    size = knobs.tag_size
    tag = Image.new("RGB", (size, size), (245, 245, 245))
    _draw_detail(tag, kind, value, knobs.frame + 2, knobs)
    ImageDraw.Draw(tag).rectangle((0, 0, size - 1, size - 1), outline=frame_colour, width=knobs.frame)
    return tag


def _values(kind: str) -> tuple[str, ...]:
    return {"glyph": tuple(GLYPHS), "stripes": STRIPES, "dots": DOT_COUNTS}[kind]


def _place(width: int, height: int, size: int, taken: list[Box], rng: np.random.Generator) -> Box:
    """A free spot for a tag, away from the border and from the other tags."""
    margin = size
    for _ in range(200):
        x = float(rng.integers(margin, width - margin - size))
        y = float(rng.integers(margin, height - margin - size))
        box = Box(x, y, x + size, y + size)
        if all(
            box.x2 + size < t.x1 or t.x2 + size < box.x1 or box.y2 + size < t.y1 or t.y2 + size < box.y1
            for t in taken
        ):
            return box
    return box


def synth_choice_sample(seed: int, index: int, knobs: SynthKnobs = SynthKnobs()) -> SynthSample:
    """The `index`-th multiple-choice sample of the set `seed`."""
    rng = _rng(seed, index, 0)
    width, height = (int(v) for v in rng.integers(knobs.min_side, knobs.max_side + 1, size=2))
    if knobs.grid:
        height = width
    image = _background(width, height, knobs.clutter, rng)  # drawn either way: tags and answers must
    if knobs.position_cue:  # not depend on the cue
        image = _position_background(width, height, rng)
    spots = _cell_spots(width, knobs.tag_size, knobs.grid, 1 + knobs.distractors, rng) if knobs.grid else []
    kind = knobs.kinds[int(rng.integers(0, len(knobs.kinds)))]
    values = _values(kind)
    n_options = min(knobs.options, len(values))
    picked = [values[i] for i in rng.permutation(len(values))[:n_options]]
    answer_value = picked[0]
    taken: list[Box] = []
    target_box = spots[0] if spots else _place(width, height, knobs.tag_size, taken, rng)
    taken.append(target_box)
    image.paste(tag_image(kind, answer_value, TARGET_FRAME, knobs), (int(target_box.x1), int(target_box.y1)))
    tags = [Tag(FRAME_NAMES[0], target_box, answer_value)]
    # Distractors carry the wrong options first, so cropping the wrong tag gives a wrong answer.
    for d in range(knobs.distractors):
        value = picked[1 + d % (n_options - 1)] if n_options > 1 else answer_value
        frame = DISTRACTOR_FRAMES[d % len(DISTRACTOR_FRAMES)]
        box = spots[1 + d] if spots else _place(width, height, knobs.tag_size, taken, rng)
        taken.append(box)
        image.paste(tag_image(kind, value, frame, knobs), (int(box.x1), int(box.y1)))
        tags.append(Tag(FRAME_NAMES[1 + d % len(DISTRACTOR_FRAMES)], box, value))
    order = rng.permutation(n_options)  # drawn either way: the rest of the sample does not depend on it
    if not knobs.shuffle_options:
        order = np.argsort([values.index(v) for v in picked])
    choices = tuple(picked[i] for i in order)
    answer = LETTERS[int(np.where(order == 0)[0][0])]
    return SynthSample((image,), QUESTIONS[kind], choices, answer, target_box, kind, tags=tuple(tags))


def _panel(
    size: int,
    frame: int,
    colour: tuple[int, int, int],
    value: str = "",
    width: int = 0,
    face: Image.Image | None = None,
) -> Image.Image:
    """A square (light, or `face`) in a `frame`-px coloured frame; with a `value`, filled with `width`-px
    stripes every 2 * `width` px running that way."""
    panel = face.copy() if face is not None else Image.new("RGB", (size, size), (245, 245, 245))
    if value:
        pixels = np.asarray(panel).copy()
        pixels[_stripes(size, value, width, 2 * width)] = 0
        panel = Image.fromarray(pixels)
    ImageDraw.Draw(panel).rectangle((0, 0, size - 1, size - 1), outline=colour, width=frame)
    return panel


def _frame_of(i: int) -> tuple[str, tuple[int, int, int]]:
    """The i-th tag of a set: red first, then the distractor colours in turn."""
    if i == 0:
        return FRAME_NAMES[0], TARGET_FRAME
    d = (i - 1) % len(DISTRACTOR_FRAMES)
    return FRAME_NAMES[1 + d], DISTRACTOR_FRAMES[d]


def _looks_panel(
    look: int,
    values: list[str],
    colour: tuple[int, int, int],
    cell: int,
    knobs: SynthKnobs,
    rng: np.random.Generator,
    face: Image.Image | None = None,
) -> tuple[Image.Image, list[Tag]]:
    """One grid cell's panel for a question that needs `look` crops; values[0] is what the panel answers.

    0 and 1 looks: stripes filling the panel, `grid`^(2 - look) times the finest stripe width (look0:
    `look0_factor` times more). 2 looks: a
    grid x grid layout of small framed tags inside the panel (red first, answering values[0]; the others
    answer the other values) in the finest stripes. Returns the panel and its inner tags (panel pixels).
    `face` paints the panel (the position cue: a panel fills its cell, so its own pixels must say where)."""
    grid, frame = knobs.grid, 2 * knobs.frame  # the panel's frame must survive a `grid` times larger shrink
    if look < 2:
        width = knobs.stripe_width * grid ** (2 - look) * (knobs.look0_factor if look == 0 else 1)
        return _panel(cell, frame, colour, values[0], width, face), []
    panel = _panel(cell, frame, colour, face=face)
    tags = []
    for i, box in enumerate(_cell_spots(cell, cell // grid * 3 // 4, grid, 1 + knobs.distractors, rng)):
        value = values[0] if i == 0 else values[1 + (i - 1) % (len(values) - 1)]
        name, tag_colour = _frame_of(i)
        panel.paste(
            _panel(int(box.width), knobs.frame, tag_colour, value, knobs.stripe_width),
            (int(box.x1), int(box.y1)),
        )
        tags.append(Tag(name, box, value))
    return panel, tags


def _face(image: Image.Image, spot: Box, knobs: SynthKnobs, rng: np.random.Generator) -> Image.Image | None:
    """With `position_cue`, a panel's face: half the image's own ramps where it lies (where the panel is, in
    the whole view) and half ramps of its own across it (where a tag inside it is, in a crop of the panel).
    A panel fills its grid cell, so without it the panel's pixels say nothing of either."""
    if not knobs.position_cue:
        return None
    side = int(spot.width)
    here = image.crop((int(spot.x1), int(spot.y1), int(spot.x2), int(spot.y2)))
    return Image.blend(here, _position_background(side, side, rng), 0.5)


def _moved(box: Box, by: Box) -> Box:
    return Box(box.x1 + by.x1, box.y1 + by.y1, box.x2 + by.x1, box.y2 + by.y1)


def synth_looks_sample(seed: int, index: int, knobs: SynthKnobs = SynthKnobs()) -> SynthSample:
    """A question that needs 0, 1 or 2 looks closer (category "look0" / "look1" / "look2", drawn from
    `knobs.looks`): which way the stripes run on the red-framed panel (2 looks: on the red tag inside it).

    A square image of `grid` x `grid` cells; the red panel and `distractors` panels in other colours fill
    cells. Each level of zoom is one cell of the view before it (a crop of a cell enlarges `grid` times), so
    with the finest stripes at `stripe_width` px, a 2048-px image and a 224-px view (grid 4, width 1), look0
    stripes read in the whole view, look1 stripes in a crop of the panel, look2 only in a crop of that crop.
    """
    if knobs.grid < 2:
        raise ValueError("the looks task lays panels on a grid: set grid (e.g. 4)")
    rng = _rng(seed, index, 3)
    side = int(rng.integers(knobs.min_side, knobs.max_side + 1)) // knobs.grid * knobs.grid
    look = knobs.looks[int(rng.integers(0, len(knobs.looks)))]
    image = _position_background(side, side, rng) if knobs.position_cue else _background(side, side, 0, rng)
    cell = side // knobs.grid
    spots = _cell_spots(side, cell, knobs.grid, 1 + knobs.distractors, rng)
    n_options = min(knobs.options, len(STRIPES))
    picked = [STRIPES[i] for i in rng.permutation(len(STRIPES))[:n_options]]
    tags: list[Tag] = []
    red_panel: list[Tag] = []
    target_box = spots[0]
    for p, spot in enumerate(spots):
        # a distractor panel answers wrong, as in the multiple-choice set: a crop of the wrong panel misleads
        values = picked if p == 0 else [picked[1 + (p - 1) % (n_options - 1)], *picked[:1], *picked[2:]]
        name, colour = _frame_of(p)
        drawn = 1 if look == 0 and p and knobs.look0_alone else look  # a distractor's stripes, hidden
        panel, inner = _looks_panel(drawn, values, colour, cell, knobs, rng, _face(image, spot, knobs, rng))
        image.paste(panel, (int(spot.x1), int(spot.y1)))
        tags.append(Tag(name, spot, values[0]))
        if p == 0 and inner:  # 2 looks: the question is about the red tag inside the red panel
            red_panel = [Tag(t.frame, _moved(t.box, spot), t.value) for t in inner]
            target_box = red_panel[0].box
    tags += red_panel  # the panels (red first), then the tags inside the red one
    order = rng.permutation(n_options)  # drawn either way: the rest of the sample does not depend on it
    if not knobs.shuffle_options:
        order = np.argsort([STRIPES.index(v) for v in picked])
    choices = tuple(picked[i] for i in order)
    answer = LETTERS[int(np.where(order == 0)[0][0])]
    return SynthSample(
        (image,), QUESTIONS["stripes"], choices, answer, target_box, f"look{look}", tags=tuple(tags)
    )


def synth_grounding_sample(seed: int, index: int, knobs: SynthKnobs = SynthKnobs()) -> SynthSample:
    """`grounding_images` images (2-4); the tag with a given glyph is in one of them. Answer: image number + box (0-1 of it).

    With `distractors` 0 the other images hold no tag at all (which image is then plain to see: a set a
    tiny model can learn); `grid` centres the tag in a cell and `position_cue` paints the background ramps,
    as for the multiple-choice set."""
    low, high = knobs.grounding_sides
    if knobs.grid and knobs.tag_size > low // knobs.grid:
        raise ValueError(
            f"tag_size {knobs.tag_size} does not fit a grounding image's cell of {low // knobs.grid} px"
        )
    rng = _rng(seed, index, 1)
    n_images = int(rng.integers(knobs.grounding_images[0], knobs.grounding_images[1] + 1))
    glyphs = [GLYPHS[i] for i in rng.permutation(len(GLYPHS))[:n_images]]
    target = int(rng.integers(0, n_images))
    images, target_box = [], None
    for i in range(n_images):
        side = int(rng.integers(low, high + 1))
        image = _background(side, side, knobs.clutter // 4, rng)
        if knobs.position_cue:
            image = _position_background(side, side, rng, 90.0 + 40.0 * i if knobs.index_cue else 150.0)
        if knobs.grid:
            (box,) = _cell_spots(side, knobs.tag_size, knobs.grid, 1, rng)
        else:
            box = _place(side, side, knobs.tag_size, [], rng)
        if i == target or knobs.distractors:
            image.paste(tag_image("glyph", glyphs[i], TARGET_FRAME, knobs), (int(box.x1), int(box.y1)))
        if i == target:
            target_box = Box(box.x1 / side, box.y1 / side, box.x2 / side, box.y2 / side)
        images.append(image)
    question = f"Which image has the tag printed with the character {glyphs[target]}, and where is that tag?"
    return SynthSample(tuple(images), question, (), str(target + 1), target_box, "multi_image_grounding")


def synth_counting_sample(seed: int, index: int, knobs: SynthKnobs = SynthKnobs()) -> SynthSample:
    """A cluttered image with 1-9 red discs; answer: the count; points: their centres (original pixels)."""
    rng = _rng(seed, index, 2)
    side = int(rng.integers(knobs.min_side // 2, knobs.max_side // 2 + 1))
    image = _background(side, side, knobs.clutter // 2, rng)
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(1, 10))
    taken: list[Box] = []
    points = []
    radius = knobs.tag_size // 3
    for _ in range(count):
        box = _place(side, side, 2 * radius, taken, rng)
        taken.append(box)
        draw.ellipse(tuple(box), fill=TARGET_FRAME)
        points.append(((box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2))
    return SynthSample(
        (image,), "How many red discs are in the image?", (), str(count), None, "counting", tuple(points)
    )


def corpus() -> list[str]:
    """The set's vocabulary, for training the small tokenizer."""
    texts = list(QUESTIONS.values()) + list(STRIPES) + list(GLYPHS) + list(DOT_COUNTS)
    texts += ["Which image has the tag printed with the character X, and where is that tag?"]
    texts += ["How many red discs are in the image?", "<think> </think> <answer> </answer>"]
    return texts + [f"The tag with the red frame shows {v}." for v in STRIPES + tuple(GLYPHS)]


def downscale_factor(width: int, height: int, max_pixels: int) -> float:
    """How much an original shrinks to fit `max_pixels`: the reason the detail is lost."""
    return math.sqrt(width * height / max_pixels)
