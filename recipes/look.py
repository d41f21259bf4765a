"""`mgpo look`: one grounding-crop step, stage by stage, as image files: build the tiny model and a synthetic
set, run turn 1 of the MGPO template through the model, read its box, and cut the crop from the ORIGINAL
image (with the hidden true box where the untrained model names none). `make demo` is the training run
(recipes/demo.py); this shows what one of its steps looks at.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from PIL import ImageDraw
from rich.console import Console

from mgpo.boxes import Box, Grounding, check_box, parse_box
from mgpo.crop import crop_region, full_region, render_view, view_input_size
from mgpo.data.dataset import open_store, read_prompts, write_synthetic
from mgpo.models.tiny import build_tiny, load_policy, load_processor
from mgpo.resize import FACTOR, PixelBudget
from mgpo.templates import MGPO, first_prompt

# The tiny model's budget: 4x below the paper's minimum, so the detail is lost and a crop recovers it.
DEMO_BUDGET = PixelBudget(min_pixels=64 * FACTOR * FACTOR, max_pixels=256 * FACTOR * FACTOR)


def _turn1_reply(model_dir: Path, prompt: str, image: object) -> str:
    """Turn 1 of the MGPO template through the tiny model (greedy): what an untrained policy says."""
    processor = load_processor(model_dir)
    model = load_policy(model_dir).eval()
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=48, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=False)


def _oracle_box(
    target: Box, original_size: tuple[int, int], input_size: tuple[int, int], margin: float = 1.0
) -> Box:
    """The hidden true box grown by `margin` on each side, in input pixels: the box a trained policy names."""
    sx, sy = input_size[0] / original_size[0], input_size[1] / original_size[1]
    grow_x, grow_y = target.width * margin, target.height * margin
    return Box(
        round(max(0.0, (target.x1 - grow_x) * sx)),
        round(max(0.0, (target.y1 - grow_y) * sy)),
        round(min(input_size[0], (target.x2 + grow_x) * sx)),
        round(min(input_size[1], (target.y2 + grow_y) * sy)),
    )


def run_look(out: str | Path, seed: int = 0) -> None:
    console = Console(soft_wrap=True)
    out = Path(out)
    start = time.perf_counter()
    model_dir = build_tiny(out / "model", tokenizer="small", size="xs", seed=seed, budget=DEMO_BUDGET)
    console.print(f"[bold]tiny model[/] {model_dir} ({time.perf_counter() - start:.1f}s)")
    start = time.perf_counter()
    data_dir = write_synthetic(out / "data", n=8, seed=seed, progress=False)
    console.print(f"[bold]synthetic set[/] {data_dir} (8 samples, {time.perf_counter() - start:.1f}s)")

    record = next(read_prompts(data_dir))
    original = open_store(data_dir).get(record.images[0])
    size_in = view_input_size(original.size, None, DEMO_BUDGET)
    resized = render_view(original, None, DEMO_BUDGET)
    console.print(
        f"[bold]sample[/] {record.id}: {record.question}  choices={record.choices} answer={record.answer}"
    )
    console.print(f"original {original.width}x{original.height} -> model input {size_in[0]}x{size_in[1]}")

    reply = _turn1_reply(model_dir, first_prompt(MGPO, record.question, record.choices), resized)
    policy = parse_box(reply, size_in)
    console.print(
        f"untrained policy's turn 1: {reply[:80]!r} -> valid={policy.valid} ({policy.reason or 'ok'})"
    )

    assert record.target_box is not None
    oracle: Grounding = check_box(_oracle_box(record.target_box, original.size, size_in), size_in)
    region = crop_region(oracle, size_in, full_region(original), original.size)
    console.print(
        f"oracle box in input pixels {tuple(oracle.box or ())} valid={oracle.valid}; crop in original pixels {tuple(region or ())}"
    )

    paths = {
        "original": out / "original.jpg",
        "input": out / "input.png",
        "input_with_box": out / "input_with_box.png",
        "crop": out / "crop.png",
    }
    original.save(paths["original"], quality=90)
    resized.save(paths["input"])
    boxed = resized.copy()
    if oracle.box is not None:
        ImageDraw.Draw(boxed).rectangle(tuple(oracle.box), outline=(0, 255, 0), width=2)
    boxed.save(paths["input_with_box"])
    if region is not None:
        crop = render_view(original, region, DEMO_BUDGET)
        crop.save(paths["crop"])
        console.print(
            f"crop {int(region.width)}x{int(region.height)} original px -> {crop.width}x{crop.height} model input (enlarged)"
        )
    for name, path in paths.items():
        console.print(f"  {name:15s} {path}")
