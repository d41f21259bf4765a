"""The policy's weights from a learner whose parameters ZeRO-3 shards over its ranks, gathered one broadcast
bucket at a time: never the whole model on a device at once. At ZeRO 0-2 every rank holds the whole weights
and these are plain reads. Under ZeRO-3 every function here is collective: every rank calls it, in step."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from runtime.broadcast import Bucket


def is_sharded(module: torch.nn.Module) -> bool:
    return any(hasattr(p, "ds_id") for p in module.parameters())


def state_shapes(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, full shape, dtype) of every tensor of `policy_state` (tied lm_head left out), without gathering."""
    tied = module.config.get_text_config().tie_word_embeddings  # type: ignore[attr-defined]
    return [
        (name, tuple(getattr(t, "ds_shape", t.shape)), t.dtype)
        for name, t in module.state_dict(keep_vars=True).items()
        if not (tied and name == "lm_head.weight")
    ]


@contextmanager
def gathered(module: torch.nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """The named tensors, whole, for the length of the block (ZeRO-3: gathered from every rank, then freed)."""
    tensors = module.state_dict(keep_vars=True)
    chosen = {name: tensors[name] for name in names}
    partitioned = [t for t in chosen.values() if hasattr(t, "ds_id")]
    if not partitioned:
        yield {name: t.detach() for name, t in chosen.items()}
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield {name: t.detach() for name, t in chosen.items()}


def full_state(module: torch.nn.Module, plan: Sequence[Bucket], keep: bool) -> dict[str, torch.Tensor]:
    """Every tensor, copied to the CPU bucket by bucket; `keep` False on the ranks that only help gather."""
    state: dict[str, torch.Tensor] = {}
    for bucket in plan:
        with gathered(module, [slot.name for slot in bucket.slots]) as part:
            if keep:
                state.update({name: t.to("cpu", copy=True).contiguous() for name, t in part.items()})
    return state
