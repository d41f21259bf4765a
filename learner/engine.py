"""The DeepSpeed training engine around the policy (CPU: gloo + DeepSpeed's CPU accelerator; GPU: NCCL).

mgpo_step accumulates one backward per trajectory group (already scaled by its token share) and then steps
once, so DeepSpeed's own gradient-accumulation scaling is off (scale_wrt_gas=False, GAS 1).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EngineConfig:
    zero_stage: int = 1  # 0 and 1 are tested equal to the torch step on CPU; 2 and 3 are not yet
    dtype: str = "fp32"  # "fp32" | "bf16"
    max_grad_norm: float = 1.0

    def deepspeed_config(self) -> dict[str, object]:
        return {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": self.max_grad_norm,
            "zero_optimization": {"stage": self.zero_stage},
            # we pass torch optimizers on purpose (DeepSpeed's own Adam JIT-compiles on CPU)
            "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": self.dtype == "bf16"},
            "fp16": {"enabled": False},
            "steps_per_print": 1 << 30,
        }


def init_single_rank() -> None:
    """The environment DeepSpeed reads, and the default process group of a one-rank learner on a store whose
    port the OS assigns as it binds.

    A port picked free beforehand (MASTER_PORT) can be taken before DeepSpeed binds it, by the rollout actor's
    engine starting beside the learner (seen: EADDRINUSE). DeepSpeed then reuses this group. A launcher's
    own settings (WORLD_SIZE > 1, or MASTER_PORT given) are left to DeepSpeed.
    """
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if dist.is_initialized() or os.environ["WORLD_SIZE"] != "1" or "MASTER_PORT" in os.environ:
        return
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True)
    os.environ["MASTER_PORT"] = str(store.port)
    dist.init_process_group(get_accelerator().communication_backend_name(), store=store, rank=0, world_size=1)


def build_deepspeed(model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: EngineConfig) -> object:
    """deepspeed.initialize with a torch optimizer (DeepSpeed's fused Adam would JIT-compile on CPU).

    Needs RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the environment (set by the entry
    point or the launcher); without them DeepSpeed looks for MPI.
    """
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config.deepspeed_config())
    return engine


def deepspeed_callbacks(engine: object) -> tuple[Callable[[torch.Tensor], None], Callable[[], float]]:
    """(backward, optimizer_step) for mgpo_step."""

    def backward(loss: torch.Tensor) -> None:
        # every group's backward accumulates; the reduction waits for the step (see step())
        engine.set_gradient_accumulation_boundary(False)  # type: ignore[attr-defined]
        engine.backward(loss, scale_wrt_gas=False)  # type: ignore[attr-defined]

    def step() -> float:
        engine.set_gradient_accumulation_boundary(True)  # type: ignore[attr-defined]
        engine.allreduce_gradients()  # type: ignore[attr-defined]
        # DeepSpeed records the norm only when a ZeRO optimizer clips; at stage 0 it is computed here
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]  # type: ignore[attr-defined]
        stage0_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        engine.step()  # type: ignore[attr-defined]
        norm = engine.get_global_grad_norm()  # type: ignore[attr-defined]
        return float(norm) if norm is not None and float(norm) > 0 else stage0_norm

    return backward, step
