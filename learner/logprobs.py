"""Recompute a policy's logprobs of trajectory tokens, computing logits only where the loss needs them.

Full-vocabulary logits over every position dominate CPU time (measured 4x with the 151,936-token vocab), so
the trunk runs once and lm_head runs only on the positions that predict a model-generated token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from PIL import Image

from mgpo.crop import render_view
from mgpo.images import ImageStore
from mgpo.masks import Sequence as TokenSequence
from mgpo.models.inputs import Batch, build_batch
from mgpo.records import TrajectoryGroup
from mgpo.resize import MERGE, PixelBudget


class TokenStats(NamedTuple):
    logprobs: torch.Tensor  # [N] logprob of each loss-carrying token, N = loss_mask.sum()
    entropy: torch.Tensor  # [N] entropy of the distribution that produced it


def group_views(group: TrajectoryGroup, store: ImageStore) -> list[list[Image.Image]]:
    """Every sample's views rendered from the image store with the group's budget: the actor's pixels."""
    budget = PixelBudget(group.min_pixels, group.max_pixels)
    originals: dict[str, Image.Image] = {}
    out = []
    for sample in group.samples:
        views = []
        for view in sample.views:
            if view.image not in originals:
                originals[view.image] = store.get(view.image)
            views.append(render_view(originals[view.image], view.region, budget))
        out.append(views)
    return out


def group_batch(processor: object, group: TrajectoryGroup, store: ImageStore) -> Batch:
    """The training batch of one group (right-padded), built exactly as the rollout built its inputs."""
    sequences = [TokenSequence(s.ids, s.loss_mask, s.logprobs) for s in group.samples]
    budget = PixelBudget(group.min_pixels, group.max_pixels)
    return build_batch(processor, sequences, group_views(group, store), budget, left_pad=False)


def split_rows(batch: Batch, rows: int) -> list[tuple[Batch, slice]]:
    """The batch in chunks of at most `rows` samples (a micro-batch), each trimmed to its own longest row,
    with the slice of the batch's flat loss-token order (`flat`) that each chunk's tokens are."""
    inputs, size = batch.inputs, batch.loss_mask.shape[0]
    image_rows = _images_per_row(inputs) if "pixel_values" in inputs else [0] * size
    grids = inputs.get("image_grid_thw")
    patches = [int(g.prod()) for g in grids] if grids is not None else []
    loss_counts = batch.loss_mask[:, 1:].sum(1).tolist()
    out, image, patch, token = [], 0, 0, 0
    for start in range(0, size, rows):
        stop = min(start + rows, size)
        width = int(inputs["attention_mask"][start:stop].sum(1).max())  # right padded: trailing columns
        chunk = {
            k: inputs[k][start:stop, :width] for k in ("input_ids", "attention_mask", "mm_token_type_ids")
        }
        images = sum(image_rows[start:stop])
        if images:
            count = sum(patches[image : image + images])
            chunk["pixel_values"] = inputs["pixel_values"][patch : patch + count]
            chunk["image_grid_thw"] = grids[image : image + images]
            image, patch = image + images, patch + count
        tokens = int(sum(loss_counts[start:stop]))
        out.append(
            (
                Batch(chunk, batch.loss_mask[start:stop, :width], batch.logprobs[start:stop, :width]),
                slice(token, token + tokens),
            )
        )
        token += tokens
    return out


def _images_per_row(inputs: dict[str, torch.Tensor]) -> list[int]:
    """How many of the batch's images (in order) each row holds: its image tokens, image by image."""
    per_image = [int(g.prod()) // (MERGE * MERGE) for g in inputs["image_grid_thw"]]
    counts, image = [], 0
    for row_tokens in inputs["mm_token_type_ids"].sum(1).tolist():
        taken = 0
        while row_tokens > 0:
            row_tokens -= per_image[image]
            image, taken = image + 1, taken + 1
        counts.append(taken)
    return counts


def token_stats(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    loss_mask: torch.Tensor,
    with_entropy: bool = True,
    temperature: float = 1.0,
) -> TokenStats:
    """Logprobs (and entropy) of the tokens where `loss_mask` [B, T] is True, under `model` sampled at
    `temperature` (the logits divided by it, as the rollout's sampler did).

    The token at t is predicted by the hidden state at t-1, so hidden states are taken at mask[:, 1:].
    """
    device = next(model.parameters()).device  # batches are built on the CPU; the learner may hold a GPU
    inputs = {k: v.to(device) for k, v in inputs.items()}
    loss_mask = loss_mask.to(device)
    model.model.rope_deltas = None  # type: ignore[union-attr]  # cached across calls otherwise
    hidden = model.model(**inputs).last_hidden_state  # type: ignore[operator]  # [B, T, H]
    predicts = loss_mask[:, 1:]  # [B, T-1]: position t-1 predicts a loss token at t
    states = hidden[:, :-1][predicts]  # [N, H]
    targets = inputs["input_ids"][:, 1:][predicts]  # [N]
    logits = model.lm_head(states).float()  # type: ignore[operator]  # [N, V]: the only full-vocab logits
    log_p = torch.log_softmax(logits / temperature, dim=-1)
    logprobs = log_p.gather(-1, targets[:, None]).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1) if with_entropy else torch.zeros_like(logprobs)
    return TokenStats(logprobs, entropy)


def flat(values: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Values [B, T] at the loss positions, in the order token_stats returns them: [N]."""
    return values[:, 1:][loss_mask[:, 1:]]


def per_token(per_sample: Sequence[float], loss_mask: torch.Tensor) -> torch.Tensor:
    """Broadcast one value per sample (an advantage) to its loss tokens: [N]."""
    values = torch.tensor(per_sample, dtype=torch.float32)[:, None].expand_as(loss_mask).contiguous()
    return flat(values, loss_mask)
