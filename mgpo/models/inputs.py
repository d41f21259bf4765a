"""Compact token sequences + rendered views -> a Qwen2.5-VL forward's inputs. One path for the HF engine and the
learner, so positions (mRoPE) and pixels are built identically at rollout and at training time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from mgpo.masks import Sequence as TokenSequence
from mgpo.masks import expand_image_pads
from mgpo.resize import MERGE, PixelBudget


def processor_size(budget: PixelBudget) -> dict[str, dict[str, int]]:
    """The processor's resize bounds = the budget. Views arrive rendered to the budget (multiples of 28
    inside it), a fixed point of smart_resize, so the processor leaves them as they are. (Never pass
    unbounded sizes: vLLM profiles memory with a dummy image of the largest allowed size.)"""
    return {"size": {"shortest_edge": budget.min_pixels, "longest_edge": budget.max_pixels}}


class Batch(NamedTuple):
    inputs: dict[
        str, torch.Tensor
    ]  # input_ids, attention_mask, mm_token_type_ids [, pixel_values, image_grid_thw]
    loss_mask: torch.Tensor  # [B, T] bool, expanded and padded like input_ids
    logprobs: torch.Tensor  # [B, T] float32 behaviour logprobs, 0 off the mask


def build_batch(
    processor: object,
    sequences: Sequence[TokenSequence],
    images: Sequence[list[Image.Image]],
    budget: PixelBudget,
    left_pad: bool,
) -> Batch:
    """Expand each compact sequence's image pads, pad the batch (left for generation, right for training),
    and add pixels and the mm_token_type_ids without which transformers computes no 3-D positions."""
    image_processor = processor.image_processor  # type: ignore[attr-defined]
    pad_image = processor.image_token_id  # type: ignore[attr-defined]
    pad_id = processor.tokenizer.pad_token_id  # type: ignore[attr-defined]
    expanded, pixel_values, grids = [], [], []
    for seq, views in zip(sequences, images, strict=True):
        counts: list[int] = []
        if views:
            pixels = image_processor(views, **processor_size(budget), return_tensors="pt")
            pixel_values.append(pixels["pixel_values"])
            grids.append(pixels["image_grid_thw"])
            counts = [int(g.prod()) // (MERGE * MERGE) for g in pixels["image_grid_thw"]]
        expanded.append(expand_image_pads(seq, pad_image, counts))
    width = max(len(e.ids) for e in expanded)
    shape = (len(expanded), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    attention = torch.zeros(shape, dtype=torch.long)
    loss_mask = torch.zeros(shape, dtype=torch.bool)
    logprobs = torch.zeros(shape, dtype=torch.float32)
    for i, e in enumerate(expanded):
        cols = slice(width - len(e.ids), width) if left_pad else slice(0, len(e.ids))
        input_ids[i, cols] = torch.from_numpy(e.ids.astype(np.int64))
        attention[i, cols] = 1
        loss_mask[i, cols] = torch.from_numpy(e.loss_mask)
        logprobs[i, cols] = torch.from_numpy(e.logprobs)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "mm_token_type_ids": (input_ids == pad_image).long(),
    }
    if pixel_values:
        inputs["pixel_values"] = torch.cat(pixel_values)
        inputs["image_grid_thw"] = torch.cat(grids)
    return Batch(inputs, loss_mask, logprobs)


def compact(ids: list[int]) -> TokenSequence:
    """A bare id list as a sequence with no loss (prompts for generation)."""
    array = np.asarray(ids, dtype=np.int32)
    return TokenSequence(array, np.zeros(len(array), bool), np.zeros(len(array), np.float32))
