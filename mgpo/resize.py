"""Qwen2.5-VL's resize rule and the pixel budget.

Every image the policy sees (the original shrunk for turn 1, each crop for later turns) goes through
`resize_to_budget`, at rollout and at training time alike: one resize path, or boxes land in the wrong place.

`pre_shrink` is the MGPO reference code's input frame (verl's process_image): an image over max_pixels is
first shrunk NEAREST to sqrt(max_pixels / area) of its sides, truncated to integers, and only then resized
by the processor's rule; 4000x3000 becomes 1148x868 there, 1148x840 here. It is off by default (one rule,
the processor's, everywhere; NEAREST aliases fine detail) and offered to `mgpo eval` for users who must
feed a released MGPO checkpoint exactly what it was trained on (benchmarks/resize_rules.py measures it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

# patch 14 x spatial merge 2: one visual token covers a 28x28 square.
PATCH = 14
MERGE = 2
FACTOR = PATCH * MERGE
MAX_ASPECT_RATIO = 200


@dataclass(frozen=True)
class PixelBudget:
    """Bounds on the pixel count of one model input image (MGPO paper: 256..1280 visual tokens)."""

    min_pixels: int = 256 * FACTOR * FACTOR
    max_pixels: int = 1280 * FACTOR * FACTOR
    pre_shrink: bool = False  # the reference's NEAREST pre-shrink first (see the module's docstring)

    def __post_init__(self) -> None:
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(
                f"pixel budget needs 0 < min_pixels <= max_pixels, got {self.min_pixels}..{self.max_pixels}"
            )


def smart_resize(
    height: int,
    width: int,
    factor: int = FACTOR,
    min_pixels: int = 56 * 56,
    max_pixels: int = 14 * 14 * 4 * 1280,
) -> tuple[int, int]:
    """Return (height, width), multiples of `factor`, with the pixel count inside [min_pixels, max_pixels].

    Same arithmetic as transformers' Qwen2-VL image processor (pinned by a test on thousands of sizes),
    including Python's round-half-to-even and no clamp of the first rounding.
    """
    if min(height, width) <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def pre_shrink_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The reference's first step: sides times sqrt(max_pixels / area), truncated, when over max_pixels."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def input_size(width: int, height: int, budget: PixelBudget) -> tuple[int, int]:
    """(width, height) of the model input for an image of `width` x `height` under `budget`."""
    if budget.pre_shrink:
        width, height = pre_shrink_size(width, height, budget.max_pixels)
    h, w = smart_resize(height, width, FACTOR, budget.min_pixels, budget.max_pixels)
    return w, h


def grid_thw(width: int, height: int) -> tuple[int, int, int]:
    """Qwen2.5-VL's image_grid_thw for an input of exactly `width` x `height` (multiples of 28)."""
    return 1, height // PATCH, width // PATCH


def num_visual_tokens(width: int, height: int) -> int:
    """Number of <|image_pad|> tokens an input of `width` x `height` expands to after the 2x2 merge."""
    return (height // FACTOR) * (width // FACTOR)


def resize_to_budget(image: Image.Image, budget: PixelBudget) -> Image.Image:
    """Resize `image` to the size the model will see; small images (crops) are enlarged.

    Bicubic, as Qwen2-VL's image processor; once resized, the processor's own resize is the identity.
    """
    if budget.pre_shrink:
        shrunk = pre_shrink_size(image.width, image.height, budget.max_pixels)
        if shrunk != image.size:
            image = image.resize(shrunk, Image.Resampling.NEAREST)
    size = input_size(image.width, image.height, budget)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC)
