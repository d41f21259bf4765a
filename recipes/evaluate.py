"""`mgpo eval`: a policy on a test split, greedy, one sample per question.

Reported (recipes.evaluate.summarize): accuracy; valid-grounding ratio; mean IoU of the first crop (the
predicted box, in original pixels) with the hidden true box, over valid boxes and over all questions (an
invalid box counts 0); how often that crop holds the whole true box; and the paper's "crop alone answers"
ratio: the predicted crop, shown ALONE to the base model with the question, yields the right letter (a crop
of the wrong place cannot).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from actors.engine import Prompt, Sampling
from actors.loop import Loop, Tokenizer
from actors.rollout_actor import ActorSpec, build_engine, engine_tokenizer, rollout_settings
from mgpo.boxes import Box, contains, iou
from mgpo.cold_start import RECOGNITION_PROMPT, RECOGNITION_SYSTEM
from mgpo.crop import render_view, view_input_size
from mgpo.data.dataset import open_store, read_prompts
from mgpo.images import ImageStore
from mgpo.metrics import looks
from mgpo.records import PromptRecord, TaskKind, TrajectoryGroup, TrajectorySample
from mgpo.resize import PixelBudget, num_visual_tokens
from mgpo.rewards import choice_reward, grounding_reward
from mgpo.templates import IM_END, format_choices, single_prompt

GROUNDING_THRESHOLD = 0.5  # MIG-Bench's Acc@IoU>=0.5


def input_sizes(record: PromptRecord, store: ImageStore, budget: PixelBudget) -> list[tuple[int, int]]:
    """The model's (W, H) of each of the record's images."""
    return [view_input_size(store.get(h).size, None, budget) for h in record.images]


def answer_iou(record: PromptRecord, sample: TrajectorySample, sizes: list[tuple[int, int]]) -> float:
    """IoU of a grounding sample's answer box with the true box (0 for the wrong image or no answer)."""
    reply = sample.text[-1] if sample.text else ""
    return grounding_reward(reply, int(record.answer), record.target_box, sizes).iou  # type: ignore[arg-type]


def passed(record: PromptRecord, sample: TrajectorySample, sizes: list[tuple[int, int]]) -> bool:
    """Whether a sample solved its prompt: the right answer (grounding: the right box, IoU >= 0.5)."""
    if record.kind is TaskKind.MULTI_IMAGE_GROUNDING:
        return answer_iou(record, sample, sizes) >= GROUNDING_THRESHOLD
    return sample.reward >= 1.0


def row(
    record: PromptRecord, group: TrajectoryGroup, store: ImageStore, budget: PixelBudget
) -> dict[str, object]:
    """What one question came to: reward, grounding, the first crop and its IoU with the hidden box (for
    multi-image grounding: the answer box's IoU with the true one, right at IoU >= 0.5), and every crop's
    region (a crop of a crop's too: whether the last one held the target tells a box that missed from a
    detail that was not read)."""
    sample = group.samples[0]
    crops = [v for v in sample.views if v.region is not None]
    region = crops[0].region if crops else None
    target = record.target_box
    correct = sample.reward >= 1.0
    if record.kind is TaskKind.MULTI_IMAGE_GROUNDING:
        overlap = answer_iou(record, sample, input_sizes(record, store, budget))
        correct = overlap >= GROUNDING_THRESHOLD
    else:
        overlap = iou(region, target) if region is not None and target is not None else 0.0
    # A crop several times the object's size has a small IoU even when right; holding it whole is what counts.
    holds = region is not None and target is not None and contains(region, target)
    return {
        "id": record.id,
        "category": record.category,
        "answer": record.answer,
        "reward": sample.reward,
        "correct": correct,
        "valid_grounding": sample.valid_grounding,
        "valid_grounding_lenient": sample.valid_grounding_lenient,
        "crop": list(region) if region is not None else None,
        "iou": overlap,
        "crop_holds_target": holds,
        "regions": [list(v.region) for v in crops if v.region is not None],
        "last_crop_holds_target": bool(crops and target is not None and contains(crops[-1].region, target)),
        **_looked(sample, store, budget),
        "text": list(sample.text),
    }


def _looked(sample: TrajectorySample, store: ImageStore, budget: PixelBudget) -> dict[str, object]:
    """How the answer looked closer, and what its images cost: visual tokens over every view it was shown."""
    seen = looks(sample)
    tokens = sum(
        num_visual_tokens(*view_input_size(store.size(v.image), v.region, budget)) for v in sample.views
    )
    return {
        "crops": seen.crops,
        "direct": seen.direct,
        "crop_of_crops": seen.crop_of_crops,
        "image_tokens": tokens,
    }


def summarize(rows: Sequence[dict], by_category: bool = True) -> dict[str, object]:
    """The split's numbers; with more than one category, the same numbers per category under `categories`."""
    n = max(1, len(rows))
    valid = [r for r in rows if r["crop"] is not None]
    out: dict[str, object] = {
        "questions": len(rows),
        "accuracy": sum(r["correct"] for r in rows) / n,
        "valid_grounding_ratio": sum(r["valid_grounding"] for r in rows) / n,
        "valid_grounding_lenient_ratio": sum(r["valid_grounding_lenient"] for r in rows) / n,
        "mean_iou_valid": statistics.fmean(r["iou"] for r in valid) if valid else 0.0,
        "mean_iou_all": sum(r["iou"] for r in rows) / n,
        "crop_holds_target_ratio": sum(r["crop_holds_target"] for r in rows) / n,
        "crops_per_question": sum(r["crops"] for r in rows) / n,
        "direct_answer_ratio": sum(r["direct"] for r in rows) / n,
        "crop_of_crop_ratio": sum(r["crop_of_crops"] for r in rows) / max(1, sum(r["crops"] for r in rows)),
        "image_tokens_per_question": sum(r["image_tokens"] for r in rows) / n,
    }
    if rows and "crop_alone_correct" in rows[0]:
        out["crop_alone_ratio"] = sum(bool(r["crop_alone_correct"]) for r in rows) / n
    categories = sorted({r["category"] for r in rows})
    if by_category and len(categories) > 1:
        out["categories"] = {
            c: summarize([r for r in rows if r["category"] == c], by_category=False) for c in categories
        }
    return out


def crop_alone(
    base: object, records: Sequence[PromptRecord], rows: list[dict], store: ImageStore, budget: PixelBudget
) -> None:
    """Show each predicted crop alone to the base model; mark `crop_alone_correct` (False without a crop)."""
    tok = Tokenizer(engine_tokenizer(base))
    prompts, where = [], []
    for i, (record, r) in enumerate(zip(records, rows, strict=True)):
        r["crop_alone_correct"] = False
        if r["crop"] is None:
            continue
        crop = render_view(store.get(record.images[0]), Box(*r["crop"]), budget)
        text = RECOGNITION_PROMPT.format(question=record.question, choices=format_choices(record.choices))
        prompts.append(Prompt(tok.encode(single_prompt(text, 1, RECOGNITION_SYSTEM)), [crop]))
        where.append(i)
    stop = tuple(tok.encode(IM_END))
    for start in range(0, len(prompts), 8):
        chunk = base.generate(
            prompts[start : start + 8], Sampling(n=1, max_tokens=32, temperature=0.0, stop_ids=stop)
        )  # type: ignore[attr-defined]
        for offset, (completion,) in enumerate(chunk):
            i = where[start + offset]
            reply = tok.decode(completion.ids)
            rows[i]["crop_alone_correct"] = choice_reward(reply, records[i].answer, records[i].choices) >= 1.0


def eval_spec(
    model: str,
    mode: str,
    image_store: str,
    engine: str = "hf",
    budget: PixelBudget = PixelBudget(64 * 28 * 28, 256 * 28 * 28),
    max_turn_tokens: int = 64,
    max_model_len: int = 4096,
    n: int = 1,
    temperature: float = 0.0,
    max_crops: int = 1,
) -> ActorSpec:
    """Greedy, one sample per question, unless told otherwise (rejection sampling samples several)."""
    return ActorSpec(
        name="eval",
        model_path=model,
        engine=engine,
        redis_url="",
        run="eval",
        image_store=image_store,
        mode=mode,
        max_crops=max_crops,
        n=n,
        temperature=temperature,
        max_turn_tokens=max_turn_tokens,
        max_model_len=max_model_len,
        min_pixels=budget.min_pixels,
        max_pixels=budget.max_pixels,
        pre_shrink=budget.pre_shrink,
    )


def evaluate_records(
    spec: ActorSpec,
    records: Sequence[PromptRecord],
    store: ImageStore,
    base: str | None = None,
    batch: int = 8,
) -> list[dict]:
    """One row per record (recipes.evaluate.row); with `base`, the crop-alone check of every crop too."""
    budget = PixelBudget(spec.min_pixels, spec.max_pixels, spec.pre_shrink)
    policy = build_engine(spec)
    try:
        loop = Loop(policy, Tokenizer(engine_tokenizer(policy)), store, rollout_settings(spec), "eval")
        rows = []
        for i in tqdm(range(0, len(records), batch), desc=f"eval {spec.mode}", unit="batch"):
            chunk = records[i : i + batch]
            groups = loop.rollout(chunk, seed=i)
            rows += [row(r, g, store, budget) for r, g in zip(chunk, groups, strict=True)]
    finally:
        policy.close()
    if base is not None:
        base_engine = build_engine(dataclasses.replace(spec, model_path=base, name="eval-base"))
        try:
            crop_alone(base_engine, records, rows, store, budget)
        finally:
            base_engine.close()
    return rows


def run_eval(
    model: str,
    data: str,
    mode: str,
    out: str,
    base: str | None = None,
    engine: str = "hf",
    limit: int | None = None,
    budget: PixelBudget = PixelBudget(64 * 28 * 28, 256 * 28 * 28),
    max_turn_tokens: int = 64,
    batch: int = 8,
    max_crops: int = 1,
) -> dict[str, object]:
    """`mgpo eval --data DIR`: a folder in our own layout (mgpo data synth)."""
    store = open_store(data)
    spec = eval_spec(model, mode, str(store.root), engine, budget, max_turn_tokens, max_crops=max_crops)
    records = list(read_prompts(data))[:limit]
    started = time.perf_counter()
    rows = evaluate_records(spec, records, store, base, batch)
    result = {"model": model, "mode": mode, "data": data, **summarize(rows)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    with open(Path(out).with_suffix(".jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return result
