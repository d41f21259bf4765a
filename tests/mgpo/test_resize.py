import random

import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from mgpo.resize import (
    FACTOR,
    PixelBudget,
    grid_thw,
    input_size,
    num_visual_tokens,
    pre_shrink_size,
    resize_to_budget,
    smart_resize,
)


def test_smart_resize_matches_transformers_on_random_sizes():
    rng = random.Random(0)
    budgets = [
        (256 * 28 * 28, 1280 * 28 * 28),
        (64 * 28 * 28, 256 * 28 * 28),
        (56 * 56, 14 * 14 * 4 * 1280),
        (4 * 28 * 28, 16 * 28 * 28),
    ]
    checked = 0
    for _ in range(5000):
        h, w = rng.randint(1, 9000), rng.randint(1, 9000)
        if max(h, w) / min(h, w) > 200:
            continue
        lo, hi = rng.choice(budgets)
        assert smart_resize(h, w, FACTOR, lo, hi) == hf_smart_resize(h, w, FACTOR, lo, hi), (h, w, lo, hi)
        checked += 1
    assert checked > 4000


def test_smart_resize_rounds_half_to_even_like_transformers():
    # 42/28 = 1.5 rounds to 2 and 70/28 = 2.5 rounds to 2 (Python's banker's rounding); 70x42 -> 56x56 < min.
    assert smart_resize(70, 42, 28, 0, 10**9) == (56, 56) == hf_smart_resize(70, 42, 28, 0, 10**9)


def test_smart_resize_shrinks_a_4k_image_into_the_mgpo_budget():
    budget = PixelBudget()
    h, w = smart_resize(3000, 4000, FACTOR, budget.min_pixels, budget.max_pixels)
    # beta = sqrt(12e6 / 1003520) = 3.458; floor(3000/3.458/28)*28 = 840, floor(4000/3.458/28)*28 = 1148
    assert (h, w) == (840, 1148)
    assert h * w <= budget.max_pixels


def test_smart_resize_rejects_extreme_aspect_and_empty_sizes():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2500)
    with pytest.raises(ValueError, match="positive"):
        smart_resize(0, 100)


def test_pixel_budget_rejects_inverted_bounds():
    with pytest.raises(ValueError, match="min_pixels <= max_pixels"):
        PixelBudget(min_pixels=1000, max_pixels=10)


def test_resize_to_budget_enlarges_a_small_crop_to_min_pixels():
    budget = PixelBudget(min_pixels=64 * 28 * 28, max_pixels=256 * 28 * 28)
    crop = Image.new("RGB", (100, 80))
    out = resize_to_budget(crop, budget)
    assert out.size == input_size(100, 80, budget)
    assert out.width * out.height >= budget.min_pixels
    assert out.width % 28 == 0 and out.height % 28 == 0


def test_resize_to_budget_is_identity_on_an_already_sized_image():
    budget = PixelBudget(min_pixels=64 * 28 * 28, max_pixels=256 * 28 * 28)
    image = Image.new("RGB", (448, 420))
    assert resize_to_budget(image, budget) is image


def test_grid_and_token_count_follow_patch_and_merge():
    # 448x420 input: grid 420/14=30 rows x 448/14=32 cols; tokens (30*32)/4 = 240.
    assert grid_thw(448, 420) == (1, 30, 32)
    assert num_visual_tokens(448, 420) == 240


def test_pre_shrink_is_the_reference_frame_and_differs_from_the_processors_on_large_images():
    paper = PixelBudget(256 * 28 * 28, 1280 * 28 * 28)
    reference = PixelBudget(256 * 28 * 28, 1280 * 28 * 28, pre_shrink=True)
    assert pre_shrink_size(4000, 3000, paper.max_pixels) == (
        1156,
        867,
    )  # int(4000 * 0.289), int(3000 * 0.289)
    assert input_size(4000, 3000, reference) == (1148, 868)
    assert input_size(4000, 3000, paper) == (1148, 840)
    assert input_size(640, 480, reference) == input_size(640, 480, paper)  # under the budget: no pre-shrink
    image = Image.new("RGB", (4000, 3000), (9, 9, 9))
    assert resize_to_budget(image, reference).size == (1148, 868)
