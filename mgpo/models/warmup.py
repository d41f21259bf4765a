"""A format-only warm start for a random tiny model, so RL has something to compare from step one.

A random-init model never writes a parseable box or a \\boxed{} letter, so every group's rewards are equal
and GRPO has no signal. This teacher-forces the MGPO two-turn FORMAT on a few synthetic prompts: turn 1 a
box JSON with a RANDOM box, turn 2 `\\boxed{X}` with a RANDOM letter. Nothing in it says where the target
is or what the answer is (no box or answer supervision); that stays for RL (and for `mgpo sft`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from mgpo.boxes import Box, check_box
from mgpo.crop import crop_region, full_region, render_view, view_input_size
from mgpo.data.dataset import open_store, read_prompts
from mgpo.masks import Sequence as TokenSequence
from mgpo.models.inputs import build_batch, compact
from mgpo.models.tiny import load_policy, load_processor
from mgpo.resize import PixelBudget
from mgpo.templates import IM_END, MGPO, first_prompt, followup

Example = tuple[list[int], list[object], list[int]]  # prompt ids, prompt images, reply ids


def teach(
    model: torch.nn.Module,
    processor: object,
    examples: Sequence[Example],
    budget: PixelBudget,
    steps: int = 300,
    lr: float = 3e-3,
    progress: bool = False,
) -> float:
    """Teacher-force each (prompt, images, reply) until the summed loss is tiny or `steps` ran out; returns
    the last mean loss per example. `progress`: a bar with the loss (a warm start can take minutes)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    batches = []
    for prompt_ids, images, reply_ids in examples:
        sequence: TokenSequence = compact(prompt_ids + reply_ids)
        inputs = build_batch(processor, [sequence], [list(images)], budget, left_pad=False).inputs
        labels = inputs["input_ids"].clone()
        labels[:, : labels.shape[1] - len(reply_ids)] = -100
        batches.append((inputs, labels))
    model.train()
    mean = float("inf")
    bar = tqdm(total=steps, desc="format warm start", unit="step", disable=not progress)
    for _ in range(steps):
        total = 0.0
        for inputs, labels in batches:
            model.model.rope_deltas = None  # type: ignore[union-attr]
            loss = model(**inputs, labels=labels).loss
            loss.backward()
            total += loss.item()
        optimiser.step()
        optimiser.zero_grad()
        mean = total / len(batches)
        bar.update()
        bar.set_postfix(loss=f"{mean:.3f}")
        if mean < 0.01:
            break
    bar.close()
    model.eval()
    return mean


def _random_box(size: tuple[int, int], rng: random.Random) -> Box:
    w, h = size
    bw, bh = rng.uniform(0.15, 0.4) * w, rng.uniform(0.15, 0.4) * h
    x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return Box(round(x), round(y), round(x + bw), round(y + bh))


def format_examples(
    processor: object, data_dir: str | os.PathLike[str], budget: PixelBudget, prompts: int, seed: int
) -> list[Example]:
    """Two examples per prompt (turn 1 and turn 2) with a random box and a random letter."""
    rng = random.Random(seed)
    tok = processor.tokenizer  # type: ignore[attr-defined]

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    store = open_store(data_dir)
    examples: list[Example] = []
    for record in list(read_prompts(data_dir))[:prompts]:
        original = store.get(record.images[0])
        view = render_view(original, None, budget)
        size = view_input_size(original.size, None, budget)
        box = _random_box(size, rng)
        region = crop_region(check_box(box, size), size, full_region(original), original.size)
        crop = render_view(original, region, budget)
        turn1 = encode(first_prompt(MGPO, record.question, record.choices))
        reply1 = encode(
            f'```json\n[{{"bbox_2d": [{box.x1:.0f}, {box.y1:.0f}, {box.x2:.0f}, {box.y2:.0f}], "label": "key image area"}}]\n```'
        )
        injected = encode(followup(MGPO, record.question, record.choices, valid=True, reply_closed=False))
        letter = chr(65 + rng.randrange(len(record.choices)))
        reply2 = encode(f"\\boxed{{{letter}}}{IM_END}")
        examples += [(turn1, [view], reply1), (turn1 + reply1 + injected, [view, crop], reply2)]
    return examples


def format_warmup(
    model_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    budget: PixelBudget,
    prompts: int = 4,
    steps: int = 60,
    seed: int = 0,
) -> Path:
    """Write `out`: the model at `model_dir` after the format-only warm start."""
    torch.manual_seed(seed)
    processor = load_processor(model_dir)
    model = load_policy(model_dir)
    examples = format_examples(processor, data_dir, budget, prompts, seed)
    teach(model, processor, examples, budget, steps, progress=True)
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
