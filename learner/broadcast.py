"""Weight broadcast learner -> rollout engines over a torch.distributed group, in flat buckets.

One collective per bucket, not per tensor: the tiny model has ~60 tensors, a 7B ~730. Tensors are grouped by
dtype (a flat buffer has one dtype) into buckets of at most `bucket_bytes`. Sender and receivers derive the same
plan from the same (name, shape, dtype) list, so only bytes travel. gloo on CPU, NCCL on GPU: same code.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist


class Slot(NamedTuple):
    name: str
    shape: tuple[int, ...]
    offset: int  # in elements, within the bucket
    numel: int


class Bucket(NamedTuple):
    dtype: torch.dtype
    numel: int
    slots: tuple[Slot, ...]


def plan_buckets(
    tensors: Sequence[tuple[str, tuple[int, ...], torch.dtype]], bucket_bytes: int
) -> list[Bucket]:
    """Group (name, shape, dtype) into per-dtype buckets of at most `bucket_bytes` (a bigger tensor gets its own)."""
    buckets: list[Bucket] = []
    open_: dict[torch.dtype, list[Slot]] = {}
    sizes: dict[torch.dtype, int] = {}
    for name, shape, dtype in tensors:
        numel = 1
        for d in shape:
            numel *= d
        item = torch.empty((), dtype=dtype).element_size()
        if open_.get(dtype) and (sizes[dtype] + numel) * item > bucket_bytes:
            buckets.append(Bucket(dtype, sizes[dtype], tuple(open_[dtype])))
            open_[dtype], sizes[dtype] = [], 0
        slots = open_.setdefault(dtype, [])
        slots.append(Slot(name, tuple(shape), sizes.get(dtype, 0), numel))
        sizes[dtype] = sizes.get(dtype, 0) + numel
    buckets += [Bucket(dtype, sizes[dtype], tuple(slots)) for dtype, slots in open_.items() if slots]
    return buckets


def plan_for(state: dict[str, torch.Tensor], bucket_bytes: int) -> list[Bucket]:
    return plan_buckets([(k, tuple(v.shape), v.dtype) for k, v in state.items()], bucket_bytes)


def pack(state: dict[str, torch.Tensor], bucket: Bucket) -> torch.Tensor:
    flat = torch.empty(bucket.numel, dtype=bucket.dtype)
    for slot in bucket.slots:
        flat[slot.offset : slot.offset + slot.numel].copy_(state[slot.name].reshape(-1))
    return flat


def unpack(flat: torch.Tensor, bucket: Bucket) -> Iterator[tuple[str, torch.Tensor]]:
    for slot in bucket.slots:
        yield slot.name, flat[slot.offset : slot.offset + slot.numel].view(slot.shape)


def send(
    state: dict[str, torch.Tensor],
    plan: Sequence[Bucket],
    group: dist.ProcessGroup | None = None,
    src: int = 0,
) -> int:
    """Broadcast every bucket from `src`; returns the bytes sent."""
    sent = 0
    for bucket in plan:
        flat = pack(state, bucket)
        dist.broadcast(flat, src=src, group=group)
        sent += flat.numel() * flat.element_size()
    return sent


def receive(
    plan: Sequence[Bucket], group: dist.ProcessGroup | None = None, src: int = 0
) -> Iterator[tuple[str, torch.Tensor]]:
    """Receive the buckets in plan order; yields (name, tensor) as each bucket lands (a weights iterator
    for vLLM's reload_weights)."""
    for bucket in plan:
        flat = torch.empty(bucket.numel, dtype=bucket.dtype)
        dist.broadcast(flat, src=src, group=group)
        yield from unpack(flat, bucket)
