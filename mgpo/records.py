"""The records that travel: prompts (dataset -> actors) and trajectory groups (actors -> learner).

Images travel as content hashes (see mgpo.images.ImageStore) and crops as boxes in ORIGINAL pixels, so the
learner rebuilds pixel inputs deterministically and Redis carries kilobytes, not megabytes.
Serialisation: msgpack, token arrays as raw little-endian bytes. Every payload starts with a schema version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import msgpack
import numpy as np

from mgpo.boxes import Box
from mgpo.crop import View

SCHEMA_VERSION = 1


class RecordError(ValueError):
    """A payload that is not a record this code can read."""


class TaskKind(StrEnum):
    MULTIPLE_CHOICE = "multiple_choice"
    COUNTING = "counting"
    MULTI_IMAGE_GROUNDING = "multi_image_grounding"


@dataclass(frozen=True)
class PromptRecord:
    """One question, from any dataset (synthetic, V*, MME-RealWorld, MIG-Bench, Pixmo, FSC-147).

    `answer` is the letter (multiple choice), the count as decimal text (counting) or the 1-based target
    image number (grounding). `target_box` is never seen by rewards in multiple-choice tasks: it is the
    hidden true region for evaluation (original pixels); for grounding it is the answer box, normalised 0-1.
    """

    id: str
    kind: TaskKind
    question: str
    images: tuple[str, ...]
    answer: str
    choices: tuple[str, ...] = ()
    target_box: Box | None = None
    points: tuple[tuple[float, float], ...] = ()
    category: str = ""
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PromptRecord:
        try:
            raw = json.loads(text)
            return cls(
                id=str(raw["id"]),
                kind=TaskKind(raw["kind"]),
                question=str(raw["question"]),
                images=tuple(raw["images"]),
                answer=str(raw["answer"]),
                choices=tuple(raw.get("choices", ())),
                target_box=Box(*raw["target_box"]) if raw.get("target_box") else None,
                points=tuple((float(x), float(y)) for x, y in raw.get("points", ())),
                category=str(raw.get("category", "")),
                source=str(raw.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise RecordError(f"not a prompt record: {err!r}") from err


@dataclass(frozen=True)
class TrajectorySample:
    """One of the n samples of a group: the whole multi-turn token sequence and what it earned."""

    ids: np.ndarray  # [T] int32: prompt + sampled + injected ids, token-exact
    loss_mask: np.ndarray  # [T] bool: True on model-generated tokens
    logprobs: np.ndarray  # [T] float32: behaviour logprobs, 0 where loss_mask is False
    views: tuple[View, ...]  # every image in the sequence, in order
    reward: float
    valid_grounding: bool
    turns: int
    finish_reason: str  # "stop" | "length" | "over_turn" | ...
    text: tuple[str, ...] = ()  # decoded model turns, for logs and the viewer only (never re-encoded)
    sampled_tokens: int = 0  # tokens the policy generated, counted even when the sample is masked out
    # the same boxes read by the lenient rule (mgpo.boxes.BoxRule): the second grounding metric
    valid_grounding_lenient: bool = False
    # multi-image grounding only: the answer box's IoU with the true one (0 for the wrong image), and whether
    # the answer named the right image; None for every other task
    answer_iou: float | None = None
    right_image: bool | None = None
    # multi-image grounding only, for the viewer: the image the answer named (1-based) and its box there,
    # normalised 0-1 like PromptRecord.target_box; None when the answer named no image it was shown
    answer_image: int | None = None
    answer_box: Box | None = None


@dataclass(frozen=True)
class TrajectoryGroup:
    """n samples of one prompt, produced by one actor under one policy version."""

    id: str  # unique per (prompt, rollout attempt): the learner deduplicates on it
    prompt_id: str
    policy_version: int
    samples: tuple[TrajectorySample, ...]
    min_pixels: int
    max_pixels: int
    actor: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return msgpack.packb(_group_to_wire(self), use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> TrajectoryGroup:
        try:
            wire = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.FormatError) as err:
            raise RecordError(f"not a msgpack trajectory group: {err}") from err
        if not isinstance(wire, dict) or wire.get("schema") != SCHEMA_VERSION:
            found = wire.get("schema") if isinstance(wire, dict) else type(wire).__name__
            raise RecordError(f"trajectory group schema {found!r}, this code reads schema {SCHEMA_VERSION}")
        try:
            return _group_from_wire(wire)
        except (KeyError, TypeError, ValueError) as err:
            raise RecordError(f"malformed trajectory group: {err!r}") from err


def _array(raw: bytes, dtype: str) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)


def _sample_to_wire(s: TrajectorySample) -> dict[str, Any]:
    return {
        "ids": s.ids.astype("<i4").tobytes(),
        "loss_mask": np.packbits(s.loss_mask.astype(bool)).tobytes(),
        "logprobs": s.logprobs.astype("<f4").tobytes(),
        "views": [[v.image, list(v.region) if v.region is not None else None] for v in s.views],
        "reward": float(s.reward),
        "valid_grounding": bool(s.valid_grounding),
        "turns": int(s.turns),
        "finish_reason": s.finish_reason,
        "text": list(s.text),
        "sampled_tokens": int(s.sampled_tokens),
        "valid_grounding_lenient": bool(s.valid_grounding_lenient),
        # multi-image grounding only: absent for every other task (a group crosses the queue per sample)
        **_present(
            answer_iou=s.answer_iou,
            right_image=s.right_image,
            answer_image=s.answer_image,
            answer_box=list(s.answer_box) if s.answer_box is not None else None,
        ),
    }


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _sample_from_wire(w: dict[str, Any]) -> TrajectorySample:
    ids = _array(w["ids"], "int32")
    mask = np.unpackbits(np.frombuffer(w["loss_mask"], dtype=np.uint8))[: len(ids)].astype(bool)
    logprobs = _array(w["logprobs"], "float32")
    if len(logprobs) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(logprobs)} logprobs")
    views = tuple(View(image, Box(*region) if region is not None else None) for image, region in w["views"])
    return TrajectorySample(
        ids=ids,
        loss_mask=mask,
        logprobs=logprobs,
        views=views,
        reward=float(w["reward"]),
        valid_grounding=bool(w["valid_grounding"]),
        turns=int(w["turns"]),
        finish_reason=str(w["finish_reason"]),
        text=tuple(w["text"]),
        sampled_tokens=int(w["sampled_tokens"]),
        valid_grounding_lenient=bool(w.get("valid_grounding_lenient", False)),
        answer_iou=None if w.get("answer_iou") is None else float(w["answer_iou"]),
        right_image=None if w.get("right_image") is None else bool(w["right_image"]),
        answer_image=None if w.get("answer_image") is None else int(w["answer_image"]),
        answer_box=Box(*w["answer_box"]) if w.get("answer_box") is not None else None,
    )


def _group_to_wire(g: TrajectoryGroup) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "id": g.id,
        "prompt_id": g.prompt_id,
        "policy_version": g.policy_version,
        "samples": [_sample_to_wire(s) for s in g.samples],
        "min_pixels": g.min_pixels,
        "max_pixels": g.max_pixels,
        "actor": g.actor,
        "timings": dict(g.timings),
    }


def _group_from_wire(w: dict[str, Any]) -> TrajectoryGroup:
    return TrajectoryGroup(
        id=str(w["id"]),
        prompt_id=str(w["prompt_id"]),
        policy_version=int(w["policy_version"]),
        samples=tuple(_sample_from_wire(s) for s in w["samples"]),
        min_pixels=int(w["min_pixels"]),
        max_pixels=int(w["max_pixels"]),
        actor=str(w["actor"]),
        timings={str(k): float(v) for k, v in w["timings"].items()},
    )
