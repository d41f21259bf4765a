"""Runs inside each vLLM worker process (LLM(worker_extension_cls=...)): in-place weight reload, from a
file or from the learner's broadcast group."""

from __future__ import annotations

from safetensors.torch import load_file

from runtime.broadcast import Address, join, plan_from_wire, receive, receive_all


class WeightReload:
    """Mixed into vLLM's worker. The CPU worker already has `update_weights`; ours have other names."""

    def mgpo_reload_weights(self, path: str) -> int:
        """Load a safetensors file of HF-named tensors into the running model; returns the tensor count.

        `model_runner.reload_weights`, not `model.load_weights`: the CPU backend repacks weights after loading.
        """
        state = load_file(path)
        self.model_runner.reload_weights(weights_iterator=iter(state.items()))  # type: ignore[attr-defined]
        return len(state)

    def mgpo_receive_weights(self, address: list, rank: int, plan: list, stream: bool = False) -> int:
        """Join this generation of the broadcast group (once) at the member's `rank` plus this worker's
        tensor-parallel rank, receive every bucket, then apply them (vLLM's loader takes this worker's shard).
        `stream`: the loader consumes the buckets as they land (one bucket of extra memory, not atomic)."""
        from vllm.distributed import get_tensor_model_parallel_rank

        address = Address(*address)
        cached = getattr(self, "_mgpo_group", None)
        if cached is None or cached[0] != address:  # a restarted learner counts generations anew
            self._mgpo_group = (address, join(address, rank + get_tensor_model_parallel_rank()))
        device = getattr(self, "device", "cpu")
        buckets = plan_from_wire(plan)
        try:
            if stream:
                landed = receive(buckets, self._mgpo_group[1], device=device)
                self.model_runner.reload_weights(weights_iterator=landed)  # type: ignore[attr-defined]
                return sum(len(b.slots) for b in buckets)
            state = receive_all(buckets, self._mgpo_group[1], device=device)
        except Exception:
            self._mgpo_group = None  # a failed generation is never reused
            raise
        self.model_runner.reload_weights(weights_iterator=iter(state.items()))  # type: ignore[attr-defined]
        return len(state)
