"""The policy's weights from a learner whose parameters ZeRO-3 shards over its ranks, gathered one broadcast
bucket at a time: never the whole model on a device at once. At ZeRO 0-2 every rank holds the whole weights
and these are plain reads. Under ZeRO-3 every function here is collective: every rank calls it, in step."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch

from runtime.broadcast import Bucket


class PolicyWeights(Mapping[str, torch.Tensor]):
    """The policy's tensors under the HF names the actors load, read one at a time. For a LoRA policy (peft)
    an adapted weight is W + its adapters' delta, computed out of place: merging into the base weights and
    back at every sync would drift them in 16-bit floats. Trained copies (`modules_to_save`) replace their
    originals; the tied lm_head is left out, as `policy_state` does."""

    def __init__(self, module: torch.nn.Module) -> None:
        from peft import PeftModel

        base = module.get_base_model() if isinstance(module, PeftModel) else module  # type: ignore[operator]
        modules = dict(base.named_modules())
        tied = base.config.get_text_config().tie_word_embeddings
        self.sources: dict[str, tuple[torch.Tensor, torch.nn.Module | None]] = {}
        for key, tensor in base.state_dict(keep_vars=True).items():
            if ".lora_" in key or ".original_module." in key or (tied and key == "lm_head.weight"):
                continue
            if ".base_layer." in key:  # an adapted layer's own weight (or bias)
                owner, _, leaf = key.partition(".base_layer.")
                self.sources[f"{owner}.{leaf}"] = (tensor, modules[owner] if leaf == "weight" else None)
            elif ".modules_to_save." in key:  # a module trained in full beside the adapters
                owner, _, rest = key.partition(".modules_to_save.")
                self.sources[f"{owner}.{rest.split('.', 1)[1]}"] = (tensor, None)
            else:
                self.sources[key] = (tensor, None)

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor, adapted = self.sources[name]
        if adapted is None:
            return tensor.detach()
        with torch.no_grad():
            deltas = [adapted.get_delta_weight(a) for a in adapted.active_adapters]  # type: ignore[operator, union-attr]
            return tensor.detach() + sum(deltas).to(tensor.dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)


def is_sharded(module: torch.nn.Module) -> bool:
    return any(hasattr(p, "ds_id") for p in module.parameters())


def state_shapes(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(name, full shape, dtype) of every tensor the actors load, without gathering or merging anything."""
    return [
        (name, tuple(getattr(t, "ds_shape", t.shape)), t.dtype)
        for name, (t, _) in PolicyWeights(module).sources.items()
    ]


@contextmanager
def gathered(module: torch.nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """The named tensors, whole, for the length of the block (ZeRO-3: gathered from every rank, then freed)."""
    weights = PolicyWeights(module)
    partitioned = [weights.sources[name][0] for name in names if hasattr(weights.sources[name][0], "ds_id")]
    if not partitioned:
        yield {name: weights[name] for name in names}
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield {name: weights[name] for name in names}


def full_state(module: torch.nn.Module, plan: Sequence[Bucket], keep: bool) -> dict[str, torch.Tensor]:
    """Every tensor, copied to the CPU bucket by bucket; `keep` False on the ranks that only help gather."""
    state: dict[str, torch.Tensor] = {}
    for bucket in plan:
        with gathered(module, [slot.name for slot in bucket.slots]) as part:
            if keep:
                state.update({name: t.to("cpu", copy=True).contiguous() for name, t in part.items()})
    return state
