"""Weight broadcast learner -> rollout engines over a torch.distributed group, in flat buckets.

One collective per bucket, not per tensor: the tiny model has ~60 tensors, a 7B ~730. Tensors are grouped by
dtype (a flat buffer has one dtype) into buckets of at most `bucket_bytes`. Sender and receivers derive the same
plan from the same (name, shape, dtype) list, so only bytes travel. gloo on CPU, NCCL on GPU: same code.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
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


class Address(NamedTuple):
    """Where and how to join one generation of the broadcast group (rank 0 is the learner).

    A generation is one fixed membership; a joining, leaving or failed actor starts the next one, so a group
    never waits on a member that is gone. Plain values: it travels through Ray and vLLM's collective_rpc.
    """

    host: str
    port: int  # the learner's TCPStore
    world_size: int
    generation: int
    backend: str = "gloo"  # "gloo" on CPU, "nccl" on GPU
    timeout_s: float = 120.0


def join(address: Address, rank: int, store: dist.Store | None = None) -> dist.ProcessGroup:
    """A process group for this generation, outside torch.distributed's global state (the learner's
    DeepSpeed group and vLLM's own group live there). Blocks until every rank joined or the timeout."""
    timeout = timedelta(seconds=address.timeout_s)
    if store is None:
        store = dist.TCPStore(address.host, address.port, is_master=False, timeout=timeout)
    prefixed = dist.PrefixStore(f"mgpo/broadcast/{address.generation}/", store)
    if address.backend == "gloo":
        from torch.distributed.distributed_c10d import ProcessGroupGloo

        return ProcessGroupGloo(prefixed, rank, address.world_size, timeout)
    if address.backend == "nccl":
        from torch.distributed.distributed_c10d import ProcessGroupNCCL

        options = ProcessGroupNCCL.Options()
        options._timeout = timeout
        return ProcessGroupNCCL(prefixed, rank, address.world_size, options)
    raise ValueError(f"unknown broadcast backend {address.backend!r}; choose 'gloo' or 'nccl'")


def _broadcast(flat: torch.Tensor, src: int, group: dist.ProcessGroup | None) -> None:
    if group is None:  # the default group (tests and single-purpose launchers)
        dist.broadcast(flat, src=src)
        return
    options = dist.BroadcastOptions()
    options.rootRank = src
    group.broadcast([flat], options).wait()


def wire_plan(plan: Sequence[Bucket]) -> list[list[object]]:
    """The plan as plain lists (dtype by name) for RPC layers that do not pickle torch dtypes."""
    return [[str(b.dtype).removeprefix("torch."), b.numel, [list(s) for s in b.slots]] for b in plan]


def plan_from_wire(wire: Sequence[Sequence[object]]) -> list[Bucket]:
    return [
        Bucket(
            getattr(torch, dtype),
            int(numel),
            tuple(Slot(n, tuple(sh), int(o), int(k)) for n, sh, o, k in slots),
        )
        for dtype, numel, slots in wire
    ]


def send(
    state: dict[str, torch.Tensor],
    plan: Sequence[Bucket],
    group: dist.ProcessGroup | None = None,
    src: int = 0,
    device: torch.device | str = "cpu",
) -> int:
    """Broadcast every bucket from `src`; returns the bytes sent."""
    sent = 0
    for bucket in plan:
        flat = pack(state, bucket).to(device)
        _broadcast(flat, src, group)
        sent += flat.numel() * flat.element_size()
    return sent


def receive(
    plan: Sequence[Bucket],
    group: dist.ProcessGroup | None = None,
    src: int = 0,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[str, torch.Tensor]]:
    """Receive the buckets in plan order; yields (name, tensor) as each bucket lands."""
    for bucket in plan:
        flat = torch.empty(bucket.numel, dtype=bucket.dtype, device=device)
        _broadcast(flat, src, group)
        yield from unpack(flat, bucket)


def receive_all(
    plan: Sequence[Bucket], group: dist.ProcessGroup, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Every bucket before any is applied: a broadcast that fails midway leaves the old weights whole."""
    return dict(receive(plan, group, device=device))
