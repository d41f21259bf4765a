"""Recent trajectories for people: what the rollout viewer and `GET /runs/{name}/trajectories` show.

Each rollout actor pushes one JSON entry per trajectory group to a capped Redis list (`mgpo:<run>:recent`):
the question, the hidden true box (never seen by training), and per sample the model's turns, the crop
regions in original pixels, reward and grounding validity. Images stay in the image store, by hash.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

import redis

from mgpo.records import PromptRecord, TrajectoryGroup

KEEP = 200  # groups kept per run


def recent_key(run: str) -> str:
    return f"mgpo:{run}:recent"


def group_entry(
    prompt: PromptRecord, group: TrajectoryGroup, size_of: Callable[[str], tuple[int, int]]
) -> dict[str, object]:
    return {
        "group": group.id,
        "prompt_id": prompt.id,
        "kind": prompt.kind.value,
        "question": prompt.question,
        "choices": list(prompt.choices),
        "answer": prompt.answer,
        "target_box": list(prompt.target_box) if prompt.target_box is not None else None,
        "images": [{"hash": h, "size": list(size_of(h))} for h in prompt.images],
        "policy_version": group.policy_version,
        "actor": group.actor,
        "time": time.time(),
        "samples": [
            {
                "text": list(s.text),
                "reward": s.reward,
                "valid_grounding": s.valid_grounding,
                "turns": s.turns,
                "finish_reason": s.finish_reason,
                "crops": [
                    {"image": v.image, "region": list(v.region)} for v in s.views if v.region is not None
                ],
                # multi-image grounding: the answer's image (1-based) and box (0-1), and how well it did
                "answer_image": s.answer_image,
                "answer_box": list(s.answer_box) if s.answer_box is not None else None,
                "answer_iou": s.answer_iou,
            }
            for s in group.samples
        ],
    }


def crop_area_ratios(entries: Sequence[dict]) -> list[float]:
    """Each crop's area over its original's area, from entries made by `group_entry`."""
    out = []
    for e in entries:
        sizes = {i["hash"]: i["size"] for i in e["images"]}
        for s in e["samples"]:
            for c in s["crops"]:
                x1, y1, x2, y2 = c["region"]
                w, h = sizes.get(c["image"], (0, 0))
                if w and h:
                    out.append((x2 - x1) * (y2 - y1) / (w * h))
    return out


def push_recent(client: redis.Redis, run: str, entries: Sequence[dict], keep: int = KEEP) -> None:
    if not entries:
        return
    pipe = client.pipeline(transaction=True)
    pipe.lpush(recent_key(run), *[json.dumps(e) for e in entries])
    pipe.ltrim(recent_key(run), 0, keep - 1)
    pipe.execute()


def read_recent(
    client: redis.Redis,
    run: str,
    limit: int = 50,
    valid: bool | None = None,
    min_reward: float | None = None,
    max_reward: float | None = None,
) -> list[dict[str, object]]:
    """Newest first, one item per sample (with its group's fields), filtered; at most `limit`."""
    items: list[dict[str, object]] = []
    for raw in client.lrange(recent_key(run), 0, -1):
        entry = json.loads(raw)
        samples = entry.pop("samples")
        for index, sample in enumerate(samples):
            if valid is not None and sample["valid_grounding"] != valid:
                continue
            if min_reward is not None and sample["reward"] < min_reward:
                continue
            if max_reward is not None and sample["reward"] > max_reward:
                continue
            items.append({**entry, **sample, "sample": index})
            if len(items) >= limit:
                return items
    return items
