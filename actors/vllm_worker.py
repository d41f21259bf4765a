"""Runs inside each vLLM worker process (LLM(worker_extension_cls=...)): in-place weight reload."""

from __future__ import annotations

from safetensors.torch import load_file


class WeightReload:
    """Mixed into vLLM's worker. The CPU worker already has `update_weights`; ours has another name."""

    def mgpo_reload_weights(self, path: str) -> int:
        """Load a safetensors file of HF-named tensors into the running model; returns the tensor count.

        `model_runner.reload_weights`, not `model.load_weights`: the CPU backend repacks weights after loading.
        """
        state = load_file(path)
        self.model_runner.reload_weights(weights_iterator=iter(state.items()))  # type: ignore[attr-defined]
        return len(state)
