"""Where a looks question is lost: each link of the chain measured alone, on the policy MODEL.

    chain.py MODEL DATA [--n 8] [--questions 24] [--out chain.json]

Per category of the looks set in DATA (its first `questions` of each), each question asked `n` times
(options in their fixed order, temperature 1, 224 x 224 views, as `mgpo data distill`):
- read: the view the set says the stripes need, given as the image and answered directly: look0 the whole
  image, look1 the red panel (one cell of the 4 x 4 grid), look2 the red tag +-16 px inside it;
- panel (look2): the red panel given as the image, MGPO's two turns on it (box, crop, answer): the second
  look with the first one right; `hit` is the share of its crops that hold the whole tag;
- whole (look1, look2): MGPO's two turns on the original; `hit` is the share of first crops that hold the
  whole target (look1 the panel, look2 the tag: a crop a second look can start from).
`right_when_hit`: the share of hits answered right.
"""

import argparse
import dataclasses
import functools
import json
import shutil
from pathlib import Path

from actors.loop import Loop, Tokenizer
from actors.rollout_actor import build_engine, engine_tokenizer, rollout_settings
from mgpo.boxes import Box
from mgpo.data.dataset import open_store, read_prompts
from mgpo.data.distill import pass_rate
from mgpo.images import ImageStore
from mgpo.records import PromptRecord
from mgpo.resize import PixelBudget
from recipes.distill import Ask, _crop_image, direct_replies, mgpo_samples, variants
from recipes.evaluate import eval_spec

BUDGET = PixelBudget(224 * 224, 224 * 224)
GRID, MARGIN = 4, 16


def _holds(region: Box | None, box: Box) -> bool:
    return region is not None and all(
        (region.x1 <= box.x1, region.y1 <= box.y1, region.x2 >= box.x2, region.y2 >= box.y2)
    )


def _cut(store: ImageStore, record: PromptRecord, region: Box, target: Box | None = None) -> PromptRecord:
    """`record` asked about `region` of its image, as an image of its own (target moved into it)."""
    image = _crop_image(store, record.images[0], region)  # the crops distillation cuts, as it cuts them
    if target is not None:
        target = Box(
            target.x1 - region.x1, target.y1 - region.y1, target.x2 - region.x1, target.y2 - region.y1
        )
    return dataclasses.replace(record, images=(image,), target_box=target)


def _panel(record: PromptRecord, side: int) -> Box:
    t, cell = record.target_box, side // GRID
    x, y = t.x1 // cell * cell, t.y1 // cell * cell
    return Box(x, y, x + cell, y + cell)


def _views(record: PromptRecord, store: ImageStore) -> tuple[PromptRecord, PromptRecord | None]:
    """The question at the zoom it needs (read) and, for look2, asked of the red panel (panel)."""
    t = record.target_box
    if record.category == "look0":
        return record, None
    if record.category == "look1":
        return _cut(store, record, t), None
    panel = _panel(record, store.get(record.images[0]).width)
    tag = Box(t.x1 - MARGIN, t.y1 - MARGIN, t.x2 + MARGIN, t.y2 + MARGIN)
    return _cut(store, record, tag), _cut(store, record, panel, t)


def _turns(loop: Loop, records: list[PromptRecord], ask: Ask, n: int) -> dict[str, float]:
    samples = [s for r in records for s in mgpo_samples(loop, r, ask)]
    owners = [r for r in records for _ in range(n)]
    hits = [
        _holds(s.views[1].region if s.turns > 1 else None, r.target_box)
        for r, s in zip(owners, samples, strict=True)
    ]
    right = [s.reward >= 1.0 for s in samples]
    return {
        "accuracy": round(sum(right) / len(samples), 3),
        "valid_crop": round(sum(s.valid_grounding for s in samples) / len(samples), 3),
        "hit": round(sum(hits) / len(hits), 3),
        "right_when_hit": round(
            sum(h and r for h, r in zip(hits, right, strict=True)) / max(1, sum(hits)), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("chain.json"))
    args = parser.parse_args()
    work = ImageStore(args.out.parent / "chain-work" / "images")
    source = open_store(args.data)
    categories: dict[str, list[PromptRecord]] = {}
    for r in read_prompts(args.data):
        if len(categories.setdefault(r.category, [])) < args.questions:
            work.put_bytes(source.path(r.images[0]).read_bytes(), check=False)
            categories[r.category].append(r)
    spec = eval_spec(args.model, "mgpo", str(work.root), "vllm", BUDGET, 64, n=1, temperature=1.0)
    policy = build_engine(spec)
    ask = functools.partial(variants, n=args.n, shuffle=False)
    result: dict[str, dict] = {}
    try:
        loop = Loop(policy, Tokenizer(engine_tokenizer(policy)), work, rollout_settings(spec), "chain")
        for category, records in sorted(categories.items()):
            views = [_views(r, work) for r in records]
            read = direct_replies(policy, [v for v, _ in views], work, BUDGET, ask)
            row: dict = {
                "questions": len(records),
                "read": round(sum(map(pass_rate, read.values())) / len(read), 3),
            }
            if category == "look2":
                row["panel"] = _turns(loop, [p for _, p in views if p is not None], ask, args.n)
            if category != "look0":
                row["whole"] = _turns(loop, records, ask, args.n)
            result[category] = row
            print(category, json.dumps(row), flush=True)
    finally:
        policy.close()
        shutil.rmtree(work.root.parent)
    args.out.write_text(json.dumps({"model": args.model, "n": args.n, **result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
