import math

import pytest

from mgpo.boxes import Box, BoxRule, check_box, contains, iou, parse_box, to_original, to_pixel_box

SIZE = (448, 420)  # W_in, H_in


LENIENT = BoxRule.LENIENT


def test_parse_box_reads_the_fenced_mgpo_json_list():
    text = 'The sign is top left.\n```json\n[{"bbox_2d": [10, 20, 110, 90], "label": "sign"}]\n```'
    assert parse_box(text, SIZE) == (Box(10, 20, 110, 90), True, "")
    assert parse_box(text, SIZE, LENIENT) == (Box(10, 20, 110, 90), True, "")


def test_strict_rule_takes_the_first_json_block_and_the_first_item_with_a_label():
    two = '```json\n[{"bbox_2d": [0, 0, 50, 50], "label": "a"}]\n``` no, rather\n```json\n[{"bbox_2d": [100, 100, 200, 200], "label": "b"}]\n```'
    assert parse_box(two, SIZE).box == Box(0, 0, 50, 50)
    assert parse_box(two, SIZE, LENIENT).box == Box(100, 100, 200, 200)  # the lenient rule takes the last
    items = '```json\n[{"bbox_2d": [0, 0, 50, 50]}, {"bbox_2d": [1, 1, 60.5, 60], "label": "x"}, {"bbox_2d": [5, 5, 90, 90], "label": "y"}]\n```'
    assert parse_box(items, SIZE).box == Box(5, 5, 90, 90)


@pytest.mark.parametrize(
    ("text", "strict_reason"),
    [
        ('```json\n[{"bbox_2d": [0, 0, 100, 100]}]\n```', "string label"),  # no label
        ('```json\n[{"bbox_2d": [0, 0, 100, 100], "label": 3}]\n```', "string label"),
        ('```json\n{"bbox_2d": [0, 0, 100, 100], "label": "a"}\n```', "not a list"),  # an object, not a list
        ('```\n[{"bbox_2d": [0, 0, 100, 100], "label": "a"}]\n```', "no ```json block"),  # untagged fence
        ('I think [maybe] here: {"bbox_2d": [0, 0, 100, 100]}', "no ```json block"),  # bare JSON
        ("<|box_start|>(0,0),(300,300)<|box_end|>", "no ```json block"),  # Qwen2's 0-1000 form
    ],
)
def test_only_the_lenient_rule_reads_boxes_outside_the_reference_format(text, strict_reason):
    strict = parse_box(text, SIZE)
    assert not strict.valid and strict_reason in strict.reason
    assert parse_box(text, SIZE, LENIENT).valid


def test_lenient_rule_reads_qwen2_normalised_form_into_input_pixels():
    g = parse_box("<|box_start|>(100,200),(500,600)<|box_end|>", SIZE, LENIENT)
    # x = v/1000 * 448, y = v/1000 * 420
    assert g.box == pytest.approx(Box(44.8, 84.0, 224.0, 252.0))
    assert g.valid


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no box at all", "no box found"),
        ('```json\n[{"bbox_2d": [NaN, 0, 100, 100]}]\n```', "malformed JSON"),
        ('```json\n[{"bbox_2d": [-5, 0, 100, 100]}]\n```', "negative"),
        ('```json\n[{"bbox_2d": [200, 0, 100, 100]}]\n```', "inverted"),
        ('```json\n[{"bbox_2d": [0, 0, 449, 100]}]\n```', "exceeds"),
        ('```json\n[{"bbox_2d": [0.5, 0, 100, 100]}]\n```', "integers"),
        ('```json\n[{"bbox_2d": [true, 0, 100, 100]}]\n```', "integers"),
        ('```json\n[{"bbox_2d": [0, 0, 100]}]\n```', "expected 4"),
        ('```json\n[{"bbox_2d": [0, 0, 100, 1', "unclosed"),
        ('```json\n[{"bbox_2d": [0, 0, 100, 1\n```', "malformed JSON"),
        ("```json\n[]\n```", "empty JSON list"),
        ('```json\n"just a string"\n```', "not an object"),
        ('```json\n[{"box": [0, 0, 100, 100]}]\n```', "no bbox_2d"),
        ('```json\n[{"bbox_2d": [0, 0, 28, 100]}]\n```', "side not above 28"),
        ("<|box_start|>(1.5,2),(500,600)<|box_end|>", "not an integer"),
        ("[[[[[[" * 5000, "no box found"),
    ],
)
def test_parse_box_gives_invalid_with_reason_on_garbage(text, reason):
    g = parse_box(text, SIZE, LENIENT)
    assert not g.valid
    assert reason in g.reason
    assert not parse_box(text, SIZE).valid


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('```json\n[{"bbox_2d": [-5, 0, 100, 100], "label": "a"}]\n```', "negative"),
        ('```json\n[{"bbox_2d": [0, 0, 449, 100], "label": "a"}]\n```', "exceeds"),
        ('```json\n[{"bbox_2d": [0, 0, 100, 1], "label": "a"', "unclosed ```json"),
        ('```json\n[{"bbox_2d": [NaN, 0, 100, 100], "label": "a"}]\n```', "malformed JSON"),
    ],
)
def test_strict_rule_gives_the_same_reasons(text, reason):
    g = parse_box(text, SIZE)
    assert not g.valid and reason in g.reason


@pytest.mark.parametrize("rule", list(BoxRule))
def test_parse_box_rejects_ten_megabytes_quickly(rule):
    g = parse_box("x" * 10_000_000 + '{"bbox_2d": [0, 0, 100, 100]}', SIZE, rule)
    assert not g.valid and "longer than" in g.reason


@pytest.mark.parametrize("rule", list(BoxRule))
def test_parse_box_survives_deeply_nested_json(rule):
    g = parse_box("```json\n" + "[" * 100_000 + "]" * 100_000 + "\n```", SIZE, rule)
    assert not g.valid


def test_check_box_boundaries_follow_mgpo_rules():
    assert check_box(Box(0, 0, 448, 420), SIZE).valid  # exactly the input is fine (x2 <= W_in)
    assert check_box(Box(0, 0, 29, 29), SIZE).valid  # sides 29 > 28
    assert not check_box(Box(0, 0, 29, 28), SIZE).valid  # height 28 is not > 28
    assert not check_box(Box(0, 0, 448, 420.5), SIZE).valid
    # aspect ratio: 3000 x 30 = 100 is not < 100
    assert not check_box(Box(0, 0, 3000, 30), (4000, 4000)).valid
    assert check_box(Box(0, 0, 2999, 30), (4000, 4000)).valid
    assert not check_box(Box(math.inf, 0, 100, 100), SIZE).valid


def test_to_original_scales_by_the_resize_ratio():
    # input 448x420 of an original 1792x1680 (x4 each way): (10,20)-(110,90) -> (40,80)-(440,360)
    whole = Box(0, 0, 1792, 1680)
    assert to_original(Box(10, 20, 110, 90), SIZE, whole) == Box(40, 80, 440, 360)


def test_to_original_composes_through_an_earlier_crop():
    # a crop of original region (1000,500)-(1200,700) shown at 224x224: (112,0)-(224,112) is its right
    # upper quarter -> (1100,500)-(1200,600) in the original
    region = Box(1000, 500, 1200, 700)
    assert to_original(Box(112, 0, 224, 112), (224, 224), region) == Box(1100, 500, 1200, 600)


def test_to_pixel_box_snaps_outward_and_clamps():
    assert to_pixel_box(Box(10.2, 20.9, 99.1, 2000.5), (1000, 1000)) == Box(10, 20, 100, 1000)


def test_iou_of_overlapping_and_disjoint_boxes():
    # overlap 5x10=50; union 100+100-50 = 150
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert iou(Box(0, 0, 1, 1), Box(2, 2, 3, 3)) == 0.0
    assert iou(Box(0, 0, 0, 0), Box(0, 0, 0, 0)) == 0.0


def test_contains_needs_the_whole_inner_box():
    cell = Box(256, 256, 512, 512)
    assert contains(cell, Box(352, 352, 416, 416)) and contains(cell, cell)
    assert not contains(cell, Box(480, 352, 544, 416))  # sticks out on the right
    assert not contains(Box(352, 352, 416, 416), cell)
