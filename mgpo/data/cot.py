"""Chain-of-thought cold-start data for multi-image grounding (arXiv 2507.00748, stage 1).

An SFT dataset folder is our dataset folder (images/, prompts.jsonl, dataset.json) plus `replies.jsonl`: one
`{"id": ..., "reply": ...}` per record, the text the model is taught to answer that record's prompt with
(`mgpo.templates.opening_prompt`, the prompt RL rolls it out with). A reply is `<think>...</think>` then
`<answer>{"image": N, "bbox_2d": [x1, y1, x2, y2]}</answer>`, the box in pixels of image N as the model sees
it. Replies come from a teacher model (kept only when right) or, here, from the record itself: where the
target is and what it looks like, written out (`rationale`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from mgpo.boxes import Box
from mgpo.records import PromptRecord, TaskKind

REPLIES_FILE = "replies.jsonl"
_GLYPH = re.compile(r"character (\S+?)[,?.]")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")


def position_words(box: Box) -> str:
    """Where a normalised (0-1) box's centre is: "top left", "middle", "bottom right", ..."""
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    column = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    if row == "middle" and column == "centre":
        return "centre"
    return f"{row} {column}" if row != "middle" else f"middle {column}"


def answer_text(image: int, box: Box) -> str:
    """The answer block; `box` in the target image's input pixels (rounded to integers)."""
    coords = [round(v) for v in box]
    return f'<answer>{{"image": {image}, "bbox_2d": {json.dumps(coords)}}}</answer>'


def rationale(record: PromptRecord, input_sizes: Sequence[tuple[int, int]]) -> str:
    """A reasoning text and the right answer, written from a grounding record's own facts (its target image,
    box and what the question names); `input_sizes` are the model's (W, H) of each image."""
    if record.kind is not TaskKind.MULTI_IMAGE_GROUNDING or record.target_box is None:
        raise ValueError(f"{record.id}: a rationale needs a multi-image grounding record with its true box")
    image = int(record.answer)
    if not 1 <= image <= len(input_sizes):
        raise ValueError(f"{record.id}: answer image {image} of {len(input_sizes)}")
    width, height = input_sizes[image - 1]
    t = record.target_box
    box = Box(t.x1 * width, t.y1 * height, t.x2 * width, t.y2 * height)
    glyph = _GLYPH.search(record.question)
    looking = (
        f"the tag printed with the character {glyph.group(1)}" if glyph else "the object the question names"
    )
    others = [str(i) for i in range(1, len(input_sizes) + 1) if i != image]
    share = (t.x2 - t.x1) * (t.y2 - t.y1)
    size = "small" if share < 0.05 else "large" if share > 0.25 else "medium-sized"
    where = f"it is {size}, in the {position_words(t)} of image {image}.</think>"
    if not others:  # one image: nothing to rule out
        return f"<think>I look for {looking} in the image: {where}" + answer_text(image, box)
    think = (
        f"<think>I look for {looking} in each of the {len(input_sizes)} images. "
        f"Image{'s' if len(others) > 1 else ''} {', '.join(others)} do{'' if len(others) > 1 else 'es'} not show it. "
        f"The {ORDINALS[image - 1] if image <= len(ORDINALS) else f'number {image}'} image does: {where}"
    )
    return think + answer_text(image, box)


def write_replies(root: str | os.PathLike[str], replies: dict[str, str]) -> None:
    with open(Path(root) / REPLIES_FILE, "w") as out:
        for record_id, reply in replies.items():
            out.write(json.dumps({"id": record_id, "reply": reply}) + "\n")


def read_replies(root: str | os.PathLike[str]) -> dict[str, str]:
    """The taught reply of each record id of an SFT folder."""
    path = Path(root) / REPLIES_FILE
    if not path.exists():
        raise FileNotFoundError(f"{root} is not an SFT dataset folder: no {REPLIES_FILE} (mgpo data cot)")
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                item = json.loads(line)
                out[str(item["id"])] = str(item["reply"])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{number}: not a {{id, reply}} line: {err}") from err
    return out


def pairs(records: Iterator[PromptRecord], replies: dict[str, str]) -> list[tuple[PromptRecord, str]]:
    """(record, taught reply) for every record that has a reply."""
    return [(r, replies[r.id]) for r in records if r.id in replies]
