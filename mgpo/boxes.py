"""The model's key-region box: parse it from text, check it, map it to original pixels.

Parsing never raises: garbage in gives `Grounding(box=None, valid=False, reason=...)`.
Coordinates are absolute pixels in the resized input image, as Qwen2.5-VL grounds (MGPO paper, sec. 3).
Two rules read a box: STRICT, the reference code's (the default: the valid-grounding ratio is then the
paper's), and LENIENT, which also takes what a model outside that format writes (a second metric).
"""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from typing import NamedTuple

# A reply this long is not a box: bail out before any regex runs over it.
MAX_REPLY_CHARS = 65_536
MIN_SIDE = 28  # MGPO: each side must exceed 28 px of the resized input
MAX_ASPECT = 100  # MGPO: aspect ratio below 100
# A bare (unfenced) box sits at the end of the reply; scanning only the tail keeps parsing linear.
BARE_JSON_WINDOW = 4096

_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_JSON_FENCED = re.compile(r"```json(.*?)```", re.DOTALL)
_QWEN2_BOX = re.compile(
    r"<\|box_start\|>\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*,\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*<\|box_end\|>"
)


class BoxRule(StrEnum):
    """Which replies carry a box."""

    # The reference's: the FIRST ```json block, a list with an item whose bbox_2d is four integers and
    # whose label is a string.
    STRICT = "strict"
    # Also a missing label, a bare JSON object or list, an untagged fence, Qwen2-VL's 0-1000 form; the LAST
    # block wins (where a model that talks first puts its final box).
    LENIENT = "lenient"


class Box(NamedTuple):
    """Axis-aligned box (x1, y1, x2, y2); which pixel space it lives in is said where it is used."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


class Grounding(NamedTuple):
    """Result of reading a box from a reply: the box in resized-input pixels when one parsed."""

    box: Box | None
    valid: bool
    reason: str  # "" when valid


def _invalid(reason: str, box: Box | None = None) -> Grounding:
    return Grounding(box, False, reason)


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}")


def _loads(text: str) -> object:
    # json accepts NaN/Infinity by default; a box with them is garbage.
    return json.loads(text, parse_constant=_reject_constant)


def _coords_from_json(obj: object) -> tuple[list[object] | None, str]:
    """Pull the bbox_2d list out of `[{"bbox_2d": ...}, ...]` or `{"bbox_2d": ...}` (first entry wins)."""
    if isinstance(obj, list):
        if not obj:
            return None, "empty JSON list"
        obj = obj[0]
    if not isinstance(obj, dict):
        return None, "JSON is not an object with bbox_2d"
    coords = obj.get("bbox_2d")
    if not isinstance(coords, list):
        return None, "no bbox_2d list"
    return coords, ""


def _int_coords(coords: list[object]) -> tuple[Box | None, str]:
    if len(coords) != 4:
        return None, f"bbox_2d has {len(coords)} numbers, expected 4"
    # bool is an int subclass in Python; True is not a coordinate.
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in coords):
        return None, "bbox_2d coordinates must be integers"
    return Box(*(float(c) for c in coords)), ""  # type: ignore[arg-type]


def _bare_json(text: str) -> object | None:
    """The last JSON value in the tail of `text` that carries a bbox_2d, else the last JSON value at all."""
    tail_start = max(0, len(text) - BARE_JSON_WINDOW)
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    found: list[object] = []
    pos = tail_start
    while True:
        starts = [i for i in (text.find("[", pos), text.find("{", pos)) if i != -1]
        if not starts:
            break
        start = min(starts)
        try:
            obj, end = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            pos = start + 1
            continue
        found.append(obj)
        pos = end
    with_box = [obj for obj in found if _coords_from_json(obj)[0] is not None]
    if with_box:
        return with_box[-1]
    return found[-1] if found else None


def _parse_qwen2(match: re.Match[str], input_size: tuple[int, int]) -> tuple[Box | None, str]:
    """Qwen2-VL's `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`, coordinates on a 0-1000 grid."""
    width, height = input_size
    values = []
    for raw in match.groups():
        if not re.fullmatch(r"\d{1,4}", raw.strip()):
            return None, f"box coordinate {raw[:20]!r} is not an integer in 0..1000"
        values.append(int(raw))
    x1, y1, x2, y2 = values
    return Box(x1 / 1000 * width, y1 / 1000 * height, x2 / 1000 * width, y2 / 1000 * height), ""


def _strict_box(text: str) -> tuple[Box | None, str]:
    match = _JSON_FENCED.search(text)
    if match is None:
        return None, "unclosed ```json block (truncated output)" if "```json" in text else "no ```json block"
    try:
        obj = _loads(match.group(1).strip())
    except (ValueError, RecursionError) as err:
        return None, f"malformed JSON: {str(err)[:80]}"
    if not isinstance(obj, list):
        return None, "the ```json block is not a list"
    for item in obj:
        if (
            isinstance(item, dict)
            and isinstance(item.get("label"), str)
            and isinstance(item.get("bbox_2d"), list)
        ):
            box, _ = _int_coords(item["bbox_2d"])
            if box is not None:
                return box, ""
    return None, "no item with a bbox_2d of four integers and a string label"


def _lenient_box(text: str, input_size: tuple[int, int]) -> tuple[Box | None, str]:
    qwen2 = list(_QWEN2_BOX.finditer(text))
    if qwen2:
        return _parse_qwen2(qwen2[-1], input_size)
    fenced = _FENCED.findall(text)
    if fenced:
        try:
            obj = _loads(fenced[-1].strip())
        except (ValueError, RecursionError) as err:
            return None, f"malformed JSON: {str(err)[:80]}"
    elif "```" in text:
        return None, "unclosed ``` block (truncated output)"
    else:
        obj = _bare_json(text)
        if obj is None:
            return None, "no box found"
    coords, reason = _coords_from_json(obj)
    if coords is None:
        return None, reason
    return _int_coords(coords)


def parse_box(text: str, input_size: tuple[int, int], rule: BoxRule = BoxRule.STRICT) -> Grounding:
    """Read the key-region box from a model reply by `rule` and check it against the resized input.

    `input_size` is (W_in, H_in) of the image the model saw.
    """
    if len(text) > MAX_REPLY_CHARS:
        return _invalid(f"reply is {len(text)} characters, longer than {MAX_REPLY_CHARS}")
    box, reason = _strict_box(text) if rule is BoxRule.STRICT else _lenient_box(text, input_size)
    if box is None:
        return _invalid(reason)
    return check_box(box, input_size)


def check_box(box: Box, input_size: tuple[int, int]) -> Grounding:
    """MGPO's validity rules for a box in resized-input pixels of size (W_in, H_in)."""
    width, height = input_size
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        return _invalid("non-finite coordinate", box)
    if x1 < 0 or y1 < 0:
        return _invalid("negative coordinate", box)
    if x1 >= x2 or y1 >= y2:
        return _invalid("inverted or empty box (need x1 < x2 and y1 < y2)", box)
    if x2 > width or y2 > height:
        return _invalid(f"box exceeds the {width}x{height} input", box)
    if box.width <= MIN_SIDE or box.height <= MIN_SIDE:
        return _invalid(f"box side not above {MIN_SIDE} px", box)
    if max(box.width / box.height, box.height / box.width) >= MAX_ASPECT:
        return _invalid(f"aspect ratio not below {MAX_ASPECT}", box)
    return Grounding(box, True, "")


def to_original(box: Box, input_size: tuple[int, int], region: Box) -> Box:
    """Map a box from resized-input pixels to original-image pixels.

    `region` is where the input image sits in the original: the whole image (0, 0, W, H) for turn 1,
    an earlier crop's box when the model zooms into a crop (multi-turn mode). MGPO: x_orig = x / W_in * W_orig.
    """
    width, height = input_size
    sx, sy = region.width / width, region.height / height
    return Box(
        region.x1 + box.x1 * sx, region.y1 + box.y1 * sy, region.x1 + box.x2 * sx, region.y1 + box.y2 * sy
    )


def to_pixel_box(box: Box, image_size: tuple[int, int]) -> Box:
    """Snap a box in original pixels outward to integers inside the image, the box we crop and record."""
    width, height = image_size
    return Box(
        float(max(0, math.floor(box.x1))),
        float(max(0, math.floor(box.y1))),
        float(min(width, math.ceil(box.x2))),
        float(min(height, math.ceil(box.y2))),
    )


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes in the same pixel space (0.0 for disjoint or empty boxes)."""
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = ix * iy
    union = max(0.0, a.width) * max(0.0, a.height) + max(0.0, b.width) * max(0.0, b.height) - inter
    return inter / union if union > 0 else 0.0


def contains(outer: Box, inner: Box) -> bool:
    """`inner` lies wholly inside `outer` (edges may touch)."""
    return outer.x1 <= inner.x1 and outer.y1 <= inner.y1 and inner.x2 <= outer.x2 and inner.y2 <= outer.y2
