"""`mgpo data cot`: the chain-of-thought cold-start set for multi-image grounding (arXiv 2507.00748, stage 1).

For every grounding record of a dataset folder, a reasoning text and the right answer in the paper's format
(mgpo.data.cot): from a teacher model (any HF Qwen2.5-VL folder, through our own engines), told the answer
and asked to reason to it, kept only when its own answer is right (the right image, IoU >= 0.5); or, without
a teacher, written from the record's own facts. Output: an SFT dataset folder that `mgpo sft` reads.
"""

from __future__ import annotations

import dataclasses
import json
import time

from mgpo.crop import view_input_size
from mgpo.data.cot import rationale, write_replies
from mgpo.data.dataset import open_store, read_prompts, write_subset
from mgpo.images import ImageStore
from mgpo.records import PromptRecord, TaskKind
from mgpo.resize import PixelBudget
from recipes.evaluate import eval_spec, evaluate_records

# Appended to the question the teacher sees (never to the prompt the student is taught with).
HINT = (
    "\n(The right answer is image {image}, box {box} in that image's pixels. Reason step by step to it "
    "from what you see, as if you had found it yourself, and end with the answer in the format asked for.)"
)


def _teacher_replies(
    teacher: str, records: list[PromptRecord], store: ImageStore, budget: PixelBudget, engine: str
) -> dict[str, str]:
    """The teacher's replies to the hinted records, only those whose own answer is right."""
    hinted = []
    for r in records:
        size = view_input_size(store.get(r.images[int(r.answer) - 1]).size, None, budget)
        t = r.target_box
        box = [round(t.x1 * size[0]), round(t.y1 * size[1]), round(t.x2 * size[0]), round(t.y2 * size[1])]  # type: ignore[union-attr]
        hinted.append(dataclasses.replace(r, question=r.question + HINT.format(image=r.answer, box=box)))
    spec = eval_spec(
        teacher, "mgpo", str(store.root), engine, budget, max_turn_tokens=256, max_model_len=8192
    )
    rows = evaluate_records(spec, hinted, store)
    return {r.id: row["text"][-1] for r, row in zip(records, rows, strict=True) if row["correct"]}


def make_cot(
    data: str,
    out: str,
    teacher: str | None = None,
    engine: str = "vllm",
    budget: PixelBudget = PixelBudget(64 * 28 * 28, 256 * 28 * 28),
) -> dict[str, object]:
    """Write the SFT folder `out` for the grounding records of `data`; return the counts."""
    started = time.perf_counter()
    source = open_store(data)
    records = list(read_prompts(data))
    grounding = [r for r in records if r.kind is TaskKind.MULTI_IMAGE_GROUNDING and r.target_box is not None]
    if not grounding:
        raise ValueError(
            f"{data}: no multi-image grounding record with a true box (mgpo data synth --task grounding)"
        )
    if teacher is not None:
        replies = _teacher_replies(teacher, grounding, source, budget, engine)
    else:
        replies = {
            r.id: rationale(r, [view_input_size(source.get(h).size, None, budget) for h in r.images])
            for r in grounding
        }
    kept = [r for r in grounding if r.id in replies]
    if not kept:
        raise ValueError(
            f"the teacher {teacher} answered none of {len(grounding)} records right: nothing to keep"
        )
    counts = {
        "records": len(records),
        "grounding_records": len(grounding),
        "kept": len(kept),
        "kept_share": len(kept) / len(grounding),
    }
    meta = {
        "format": "mgpo-sft",
        "source": str(data),
        "teacher": teacher,
        "min_pixels": budget.min_pixels,  # the replies' boxes are in pixels of inputs at this budget
        "max_pixels": budget.max_pixels,
        **counts,
    }
    write_subset(out, kept, source, meta)
    write_replies(out, {r.id: replies[r.id] for r in kept})
    result = {"out": str(out), **counts, "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(result), flush=True)
    return result
