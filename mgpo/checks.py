"""What the rollout loop would refuse, checked at the door (upload, enqueue, dataset load) so that a bad prompt
is turned away with its reason instead of failing inside an actor.

Each check returns the problems it found as sentences (empty: fine); callers decide whether one problem
refuses a request (the API) or skips one record (a dataset, the feeder)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

from mgpo.records import PromptRecord, TaskKind
from mgpo.resize import MAX_ASPECT_RATIO

# Images a prompt may bring beyond what a multiple-choice rollout adds itself (its crops): the rollout
# engine is started with `max_crops + EXTRA_PROMPT_IMAGES` images per prompt (actors.rollout_actor).
EXTRA_PROMPT_IMAGES = 6  # MIG-Bench's records carry up to 6 images
WHOLE_NUMBER = re.compile(r"[0-9]+")
DIGEST = re.compile(
    r"[0-9a-f]{64}"
)  # images are named by content hash: never by path (no ../ into the disk)  # ASCII digits only: str.isdigit() also takes "²", which int() refuses


def prompt_image_limit(max_crops: int) -> int:
    """Images per prompt the rollout engine takes (the prompt's own plus the crops of a rollout)."""
    return max_crops + EXTRA_PROMPT_IMAGES


def image_problems(width: int, height: int) -> list[str]:
    """An image the resize rule refuses (Qwen2.5-VL's smart_resize: aspect ratio at most 200)."""
    if width <= 0 or height <= 0:
        return [f"image is {width}x{height}: both sides must be positive"]
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        return [f"image is {width}x{height}: aspect ratio {ratio:.0f} is over the model's {MAX_ASPECT_RATIO}"]
    return []


def prompt_problems(record: PromptRecord, max_images: int) -> list[str]:
    """A prompt record the loop cannot roll out with an engine that takes `max_images` images per prompt."""
    problems = []
    n = len(record.images)
    if n == 0:
        problems.append("a prompt needs at least one image")
    named = [str(h)[:80] for h in record.images if not DIGEST.fullmatch(str(h))]
    if named:
        problems.append(f"images are named by their sha256 hex digest, not {named[0]!r}")
    if record.kind is TaskKind.MULTIPLE_CHOICE:
        # the multiple-choice templates show one image (then its crops): more would have no placeholder
        if n > 1:
            problems.append(f"a multiple-choice prompt has one image, this one has {n}")
        letters = [chr(ord("A") + i) for i in range(len(record.choices))]
        if len(record.choices) < 2 or record.answer not in letters:
            problems.append(f"multiple choice needs >= 2 choices and an answer among {letters or ['A', 'B']}")
    elif n > max_images:
        problems.append(f"{n} images, over the {max_images} the rollout engine takes per prompt")
    if record.kind is TaskKind.COUNTING and not WHOLE_NUMBER.fullmatch(record.answer):
        problems.append(f"a counting answer is a whole number in digits 0-9, got {record.answer[:20]!r}")
    if record.kind is TaskKind.MULTI_IMAGE_GROUNDING:
        if not (record.answer.isascii() and record.answer.isdigit() and 1 <= int(record.answer) <= n):
            problems.append(f"the answer names the target image, 1..{n}, got {record.answer[:20]!r}")
        box = record.target_box
        if box is None or not 0 <= box.x1 < box.x2 <= 1 or not 0 <= box.y1 < box.y2 <= 1:
            problems.append(
                f"a grounding prompt needs its target_box normalised 0-1 with x1 < x2, y1 < y2, got {box}"
            )
    return problems


class Screened(NamedTuple):
    good: list[PromptRecord]
    refused: list[tuple[str, str]]  # (record id, its problems joined)


def screen(
    records: Iterable[PromptRecord], image_problems_of: Callable[[str], list[str]], max_images: int
) -> Screened:
    """Split records into those the loop can roll out and the refused, with reasons. `image_problems_of`
    names what is wrong with an image (by digest): missing, unreadable, a shape the model cannot take."""
    seen: dict[str, list[str]] = {}
    good, refused = [], []
    for record in records:
        problems = prompt_problems(record, max_images)
        for digest in dict.fromkeys(record.images):
            if digest not in seen:
                seen[digest] = image_problems_of(digest)
            problems += seen[digest]
        if problems:
            refused.append((record.id, "; ".join(problems)))
        else:
            good.append(record)
    return Screened(good, refused)
