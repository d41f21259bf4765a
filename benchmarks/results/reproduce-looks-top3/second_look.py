"""Look2 test questions cropped twice, per policy: did the first crop hold the tag, did the second, and how
often was a question right when the second one did.

    second_look.py RUN_DIR [RUN_DIR ...]   (each with eval/*.jsonl and data/test/prompts.jsonl)

Rows written before `regions` was recorded (reproduce-looks-panel) get the second crop from the reply text:
its box is in pixels of the first crop's 224-px view, the view the loop showed.
"""

import json
import re
import sys
from pathlib import Path

VIEW = 224


def holds(region: list[float], target: list[float]) -> bool:
    return (
        region[0] <= target[0]
        and region[1] <= target[1]
        and region[2] >= target[2]
        and region[3] >= target[3]
    )


def second_region(row: dict) -> list[float]:
    if "regions" in row:
        return row["regions"][-1]
    box = json.loads(re.search(r"\{.*\}", row["text"][1]).group())["bbox_2d"]
    x1, y1, x2, y2 = row["crop"]
    sx, sy = (x2 - x1) / VIEW, (y2 - y1) / VIEW
    return [x1 + box[0] * sx, y1 + box[1] * sy, x1 + box[2] * sx, y1 + box[3] * sy]


for run in map(Path, sys.argv[1:]):
    prompts = {json.loads(line)["id"]: json.loads(line) for line in open(run / "data/test/prompts.jsonl")}
    for policy in ("sft", "multiturn"):
        file = run / "eval" / f"{policy}.jsonl"
        rows = [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []
        twice = [r for r in rows if r["category"] == "look2" and r["crop_of_crops"]]
        if not twice:
            print(f"{run.name:28s} {policy:9s} look2 cropped twice: 0")
            continue
        hits = [holds(second_region(r), prompts[r["id"]]["target_box"]) for r in twice]
        right = sum(r["correct"] for r, h in zip(twice, hits, strict=True) if h)
        print(
            f"{run.name:28s} {policy:9s} look2 cropped twice: {len(twice):3d}  first crop holds the tag "
            f"{sum(r['crop_holds_target'] for r in twice):3d}  second {sum(hits):3d}  right when it does "
            f"{right}/{sum(hits)}  accuracy {sum(r['correct'] for r in twice) / len(twice):.2f}"
        )
