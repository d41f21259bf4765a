import numpy as np
from PIL import Image

from mgpo.boxes import Box, check_box
from mgpo.crop import crop_region, full_region, render_view, view_input_size
from mgpo.resize import PixelBudget

BUDGET = PixelBudget(min_pixels=64 * 28 * 28, max_pixels=256 * 28 * 28)


def _gradient(width: int, height: int) -> Image.Image:
    # pixel (x, y) = (x % 256, y % 256, (x // 256) * 16): every pixel says where it is
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.stack([xs % 256, ys % 256, (xs // 256) * 16], -1).astype(np.uint8))


def test_crop_region_maps_a_valid_box_to_original_pixels():
    original = _gradient(1792, 1680)
    size_in = view_input_size(original.size, None, BUDGET)
    assert size_in == (448, 420)
    region = crop_region(
        check_box(Box(100, 100, 140, 150), size_in), size_in, full_region(original), original.size
    )
    assert region == Box(400, 400, 560, 600)  # x4 each way


def test_crop_region_is_none_for_an_invalid_box():
    g = check_box(Box(0, 0, 10, 10), (448, 420))
    assert crop_region(g, (448, 420), Box(0, 0, 1792, 1680), (1792, 1680)) is None


def test_render_view_cuts_the_original_not_the_resized_image():
    original = _gradient(1792, 1680)
    region = Box(400, 400, 560, 600)
    view = render_view(original, region, BUDGET)
    # enlarged: 160x200 -> smart_resize up to >= 64*28*28 pixels
    assert view.width * view.height >= BUDGET.min_pixels
    # its top-left pixel comes from original (400, 400) -> (400 % 256, 400 % 256, 16)
    top_left = np.asarray(view)[2, 2]
    assert abs(int(top_left[0]) - 144) <= 3 and abs(int(top_left[1]) - 144) <= 3 and top_left[2] == 16


def test_render_view_of_the_whole_image_fits_the_budget():
    view = render_view(_gradient(1792, 1680), None, BUDGET)
    assert view.size == (448, 420)


def test_a_crop_too_elongated_in_the_original_falls_back_to_the_whole_image():
    # valid in input pixels (2800 / 30 = 93 < 100), but the view's region is squashed 2:1 in the original,
    # so the crop is 2800 x 15 there: aspect 187 >= 150, where the reference shows the whole image again
    g = check_box(Box(0, 100, 2800, 130), (2800, 2800))
    assert g.valid
    assert crop_region(g, (2800, 2800), Box(0, 0, 2800, 1400), (2800, 1400)) is None
    tall_enough = check_box(Box(0, 100, 2800, 160), (2800, 2800))  # 2800 x 30 there: aspect 93
    assert crop_region(tall_enough, (2800, 2800), Box(0, 0, 2800, 1400), (2800, 1400)) == Box(0, 50, 2800, 80)
