"""The DeepSpeed training engine around the policy (CPU: gloo + DeepSpeed's CPU accelerator; GPU: NCCL).

mgpo_step accumulates one backward per trajectory group (already scaled by its token share) and then steps
once: DeepSpeed's unmanaged gradient accumulation (`managed_gradient_accumulation: false`), where step() is the
boundary that reduces the gradients across ranks, and backward never scales by a GAS count.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

import torch


@dataclass(frozen=True)
class EngineConfig:
    zero_stage: int = 1  # 0, 1 (one rank), 2 and 3 (two ranks) are tested equal to the torch step on CPU
    dtype: str = "fp32"  # "fp32" | "bf16"
    max_grad_norm: float = 1.0
    offload_optimizer: bool = False  # optimizer states (and its step) in CPU memory: ZeRO-Offload

    def deepspeed_config(self) -> dict[str, object]:
        return {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "managed_gradient_accumulation": False,
            "gradient_clipping": self.max_grad_norm,
            "zero_optimization": {
                "stage": self.zero_stage,
                **(
                    {"offload_optimizer": {"device": "cpu", "pin_memory": True}}
                    if self.offload_optimizer
                    else {}
                ),
            },
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


def init_ranks(rank: int, world_size: int, host: str, port: int, timeout_s: float = 1800.0) -> None:
    """Join a multi-rank learner's process group at the rendezvous store the driver holds (host, port).

    Each rank sees one device (Ray gives each rank actor its own GPU), hence LOCAL_RANK 0. `timeout_s` bounds
    a collective whose partner is gone; the driver notices a dead rank sooner and restarts them all.
    """
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0", MASTER_ADDR=host, MASTER_PORT=str(port)
    )
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, world_size, is_master=False, timeout=timeout)
    backend = get_accelerator().communication_backend_name()
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in backward instead of keeping them. HF does so only in
    training mode, which the step switches on for its trainable passes: refused for a model with dropout,
    whose training mode would change the function the old log-probs were computed with."""
    dropout = {k: v for k, v in model.config.get_text_config().to_dict().items() if "dropout" in k and v}  # type: ignore[attr-defined]
    if dropout:
        raise ValueError(f"gradient_checkpointing needs a model without dropout; this one has {dropout}")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]


def make_optimizer(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, config: EngineConfig
) -> torch.optim.Optimizer:
    """AdamW: torch's, or with the optimizer offloaded DeepSpeed's CPU Adam (its C++ op is built on first use,
    ~1 min; a torch optimizer would step the offloaded states several times slower)."""
    if config.offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, lr=lr, weight_decay=weight_decay, adamw_mode=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


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
        engine.backward(loss, scale_wrt_gas=False)  # type: ignore[attr-defined]

    def step() -> float:
        # DeepSpeed records the norm only when a ZeRO optimizer clips; at stage 0 (one rank only: the
        # config refuses stage 0 across ranks, whose norm this would read before the reduction) it is ours
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]  # type: ignore[attr-defined]
        stage0_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
        engine.step()  # type: ignore[attr-defined]
        norm = engine.get_global_grad_norm()  # type: ignore[attr-defined]
        return float(norm) if norm is not None and float(norm) > 0 else stage0_norm

    return backward, step
