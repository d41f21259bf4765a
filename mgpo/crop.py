"""Cut the key region from the ORIGINAL image and size it for the model.

A `View` is what the model sees as one image: an original (by content hash) and, for a crop, the region in
original pixels. Actor and learner both turn views into pixels with `render_view`, so the learner rebuilds
exactly the inputs the actor used from the record alone.
"""

from __future__ import annotations

from typing import NamedTuple

from PIL import Image

from mgpo.boxes import Box, Grounding, to_original, to_pixel_box
from mgpo.resize import PixelBudget, input_size, resize_to_budget

# The MGPO reference falls back to the whole image when the mapped crop is this elongated (its input may be
# valid, aspect < 100, yet map to a sliver of the original); past 200 the resize rule would refuse it.
CROP_MAX_ASPECT = 150


class View(NamedTuple):
    """One model input image: `image` is a content hash; `region` is None for the whole original."""

    image: str
    region: Box | None = None


def full_region(image: Image.Image) -> Box:
    return Box(0.0, 0.0, float(image.width), float(image.height))


def render_view(original: Image.Image, region: Box | None, budget: PixelBudget) -> Image.Image:
    """Pixels of a view: the original (or its `region`, integer original pixels) resized to the budget.

    A small region comes out enlarged up to min_pixels: that is the point of looking closer.
    """
    if region is not None:
        original = original.crop((int(region.x1), int(region.y1), int(region.x2), int(region.y2)))
    return resize_to_budget(original, budget)


def view_input_size(
    original_size: tuple[int, int], region: Box | None, budget: PixelBudget
) -> tuple[int, int]:
    """(W_in, H_in) of a view without rendering it."""
    if region is None:
        return input_size(*original_size, budget)
    return input_size(int(region.width), int(region.height), budget)


def crop_region(
    grounding: Grounding, input_size: tuple[int, int], source_region: Box, original_size: tuple[int, int]
) -> Box | None:
    """The crop region in integer original pixels for a valid grounding, else None (also for a crop of
    aspect ratio >= CROP_MAX_ASPECT: the whole image is shown again, as in the reference).

    `source_region` is where the image the model pointed at sits in the original (the whole image, or an
    earlier crop in multi-turn mode).
    """
    if not grounding.valid or grounding.box is None:
        return None
    region = to_pixel_box(to_original(grounding.box, input_size, source_region), original_size)
    if region.width < 1 or region.height < 1:
        return None
    if max(region.width / region.height, region.height / region.width) >= CROP_MAX_ASPECT:
        return None
    return region
