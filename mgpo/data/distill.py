"""Self-distillation into the autonomous multi-turn format (`rollout.mode: multiturn`).

A path is how a question was solved: the model's turns (crop requests, then the answer) and the crop regions
they gave, in original pixels. `mgpo data distill` finds, for each question, the way an MGPO-trained
policy solves it by (no crop, one crop, a crop of the crop; `first_way` picks) and writes it here; `mgpo sft`
teaches the whole conversation, with the loop's own injected turns between the model's, so SFT and RL see
the same tokens. An SFT folder of paths is our dataset folder plus `paths.jsonl`, one line per record:
`{"id": ..., "turns": [request, ..., answer], "regions": [[x1, y1, x2, y2], ...]}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from mgpo.boxes import Box
from mgpo.records import PromptRecord
from mgpo.rewards import choice_reward
from mgpo.templates import IM_END, LETTERS, Template, first_prompt, followup

PATHS_FILE = "paths.jsonl"


class LookPath(NamedTuple):
    """The model's turns (every one but the last asks for a crop) and the region each request gave."""

    turns: tuple[str, ...]
    regions: tuple[Box, ...]

    @property
    def looks(self) -> int:
        return len(self.regions)


def crop_request(box: Box, image: int) -> str:
    """A multi-turn crop request: `box` in pixels of image `image` as the model saw it (1 = the original).
    The loop's stop strings end a turn at this closing fence, as here."""
    coords = [round(v) for v in box]
    return f'```json\n{{"bbox_2d": {json.dumps(coords)}, "image": {image}}}\n```'


def answer_turn(letter: str) -> str:
    return f"\\boxed{{{letter}}}"


def conversation(record: PromptRecord, template: Template, path: LookPath) -> list[tuple[str, bool]]:
    """The whole multi-turn exchange as (text, trained) pieces: the opening prompt, then each model turn
    (trained) and the loop's injected turn after it (not trained), the answer closed by <|im_end|>.

    The injected texts are the loop's (`followup`): a crop request's turn ends at its closing fence and the
    loop closes it, so the model is never taught an <|im_end|> there either."""
    if len(path.turns) != path.looks + 1:
        raise ValueError(f"{record.id}: {len(path.turns)} turns for {path.looks} crops (need crops + 1)")
    pieces = [(first_prompt(template, record.question, record.choices), False)]
    for i, request in enumerate(path.turns[:-1]):
        pieces.append((request, True))
        injected = followup(template, record.question, record.choices, True, False, image_number=i + 2)
        pieces.append((injected, False))
    pieces.append((path.turns[-1] + IM_END, True))
    return pieces


def path_json(record_id: str, path: LookPath) -> dict[str, object]:
    """One `paths.jsonl` line's object (regions in whole original pixels, as the loop cuts them)."""
    regions = [[round(v) for v in r] for r in path.regions]
    return {"id": record_id, "turns": list(path.turns), "regions": regions}


def path_from_json(item: dict) -> tuple[str, LookPath]:
    """The record id and path of a `paths.jsonl` line's object; ValueError when it is not one."""
    try:
        record_id = str(item["id"])
        turns = tuple(str(t) for t in item["turns"])
        regions = tuple(Box(*(float(v) for v in r)) for r in item["regions"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"not an {{id, turns, regions}} line: {err}") from err
    if len(turns) != len(regions) + 1:
        raise ValueError(f"{len(turns)} turns for {len(regions)} crops (need crops + 1)")
    return record_id, LookPath(turns, regions)


def write_paths(root: str | os.PathLike[str], paths: dict[str, LookPath]) -> None:
    with open(Path(root) / PATHS_FILE, "w") as out:
        for record_id, path in paths.items():
            out.write(json.dumps(path_json(record_id, path)) + "\n")


def read_paths(root: str | os.PathLike[str]) -> dict[str, LookPath]:
    """The taught path of each record id of a distilled SFT folder."""
    file = Path(root) / PATHS_FILE
    out = {}
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record_id, path = path_from_json(json.loads(line))
        except ValueError as err:  # a line that is no JSON too
            raise ValueError(f"{file}:{number}: {err}") from err
        out[record_id] = path
    return out


class Bars(NamedTuple):
    """What makes a way a question's path, in pass rates over its `n` askings."""

    # With options in a fixed order a favourite letter passes every time, and a path that taught it would
    # teach a guess, not a reading: so a direct answer must also beat a guess (`first_way`'s `blind`).
    direct: float = 0.5  # a direct answer: right this often from the whole image,
    blind_margin: float = 0.25  # and this much more often than a guess
    crop: float = 0.5  # a crop path: right with a valid crop this often,
    # and this much more often than a guess in the crop: its rollouts with every crop blurred past reading.
    # A crop shows a kind of image the whole view does not (a panel of small tags), and the policy may answer
    # it with a favourite value: MGPO's teacher answered "vertical" after one crop of a look2 panel 0.68 of
    # the time, and those paths taught the student to stop there (README, Results). 0: not asked.
    crop_margin: float = 0.25


def first_way(
    direct: float, blind: float, crop: float, bars: Bars = Bars(), crop_blind: float = 0.0
) -> int | None:
    """0 (answer directly) or 1 (crop once): whichever clears its bar, the more often right of the two if
    both do (a tie: the shorter); None: neither, try a crop of a crop. `blind`: what a guess scores (the
    image blurred past reading, or the policy's letter shares: `letter_rate`, whichever is higher);
    `crop_blind`: the same after the crop (its crops blurred, or the letter shares)."""
    reads = direct > 0 and direct >= bars.direct and direct - blind >= bars.blind_margin
    crops = crop > 0 and crop >= bars.crop  # > 0: a path is one of the policy's own solved samples
    crops = crops and crop - crop_blind >= bars.crop_margin
    if reads and (not crops or direct >= crop):
        return 0
    return 1 if crops else None


def pass_rate(asked: Sequence[tuple[PromptRecord, str]]) -> float:
    """The share of replies that name their asking's right option."""
    return sum(choice_reward(reply, v.answer, v.choices) for v, reply in asked) / len(asked)


def letter_shares(asked: Sequence[tuple[PromptRecord, str]]) -> dict[str, float]:
    """How often the replies name each letter, over all the askings of all the questions: the letters the
    policy answers whatever it is shown."""
    letters = sorted({letter for v, _ in asked for letter in LETTERS[: len(v.choices)]})
    return {x: sum(choice_reward(r, x, v.choices) for v, r in asked) / len(asked) for x in letters}


def letter_rate(asked: Sequence[PromptRecord], shares: dict[str, float]) -> float:
    """What naming letters at the policy's own overall shares scores on these askings. Blurring catches a
    favourite letter; this catches a letter a whole kind of image draws (every panel of small tags answered
    'B'), which blurring changes and a question's own rates cannot tell from a reading."""
    return sum(shares.get(v.answer, 0.0) for v in asked) / len(asked)


def looks_share(paths: Sequence[LookPath]) -> dict[str, int]:
    """How many paths take 0, 1, 2, ... crops: what the distilled set teaches."""
    counts: dict[str, int] = {}
    for path in paths:
        counts[f"look{path.looks}"] = counts.get(f"look{path.looks}", 0) + 1
    return dict(sorted(counts.items()))
