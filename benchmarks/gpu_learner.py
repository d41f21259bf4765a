"""Learner throughput, MFU and memory on a random-init Qwen2.5-VL-7B-shaped model, for a GPU when one is lent.

Self-contained enough to carry to a machine with only torch, transformers and CUDA (no vLLM, Ray or DeepSpeed):
the learner's own loss path (`learner.logprobs.token_stats`, `mgpo.loss.policy_loss`), micro-batches of the
config's sample length, gradient checkpointing, and the KL reference forward ON the policy's device (the fix
of issue 19: a reference left on the CPU failed with a device mismatch). The model has the 7B's widths and
vocabulary (configs/shapes/qwen2.5-vl-7b.json) and `--layers` of its 28 decoder layers (a whole 7B with
AdamW states does not fit one GPU without the ZeRO ranks); MFU counts 6 x trained parameters x tokens (+ 2 x
for the reference) against the GPU's dense bf16 peak. Peak memory is set beside `mgpo plan`'s estimate of the
same shape and settings: the model states (weights, optimizer) are resident between steps; what a step adds
on top of them is set beside `recipes.plan.activation_bytes` for the same pass, the plan's least certain part.

    python benchmarks/gpu_learner.py --layers 8 --micro-batch 2 --checkpointing --kl   # on the GPU
    python benchmarks/gpu_learner.py --device cpu --layers 1 --vision-layers 1 --hidden 256 --samples 2 \\
        --tokens 256 --steps 1                                                            # a CPU smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from recipes.plan import activation_bytes, shape_from

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, the vendors' figures


def build(args: argparse.Namespace) -> torch.nn.Module:
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    config = AutoConfig.from_pretrained(args.shapes)
    text = config.get_text_config()
    text.num_hidden_layers, config.vision_config.depth = args.layers, args.vision_layers
    config.vision_config.fullatt_block_indexes = [args.vision_layers - 1]
    if args.hidden:  # a narrower model (the CPU smoke): heads keep their 128 width
        text.hidden_size, text.intermediate_size = args.hidden, 4 * args.hidden
        text.num_attention_heads, text.num_key_value_heads = args.hidden // 128 or 1, 1
        config.vision_config.out_hidden_size = args.hidden
    dtype = torch.bfloat16 if args.device != "cpu" else torch.float32
    with torch.device(args.device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, torch_dtype=dtype)
    return model


def batch(
    model: torch.nn.Module, rows: int, tokens: int, generated: int, device: str
) -> tuple[dict, torch.Tensor]:
    """`rows` samples of `tokens`: one image of the config's largest grid, text, `generated` loss tokens."""
    config = model.config
    side = 32  # patches a side: 1,024 patches, 256 image tokens after the 2x2 merge
    image_tokens = side * side // 4
    ids = torch.randint(0, 150_000, (rows, tokens))
    ids[:, 1] = config.vision_start_token_id
    ids[:, 2 : 2 + image_tokens] = config.image_token_id
    ids[:, 2 + image_tokens] = config.vision_end_token_id
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": (ids == config.image_token_id).long(),
        "pixel_values": torch.randn(rows * side * side, 3 * 2 * 14 * 14),
        "image_grid_thw": torch.tensor([[1, side, side]] * rows),
    }
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, -generated:] = True
    dtype = next(model.parameters()).dtype
    return {k: v.to(device, dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}, mask.to(
        device
    )


def step(
    model: torch.nn.Module,
    reference: torch.nn.Module | None,
    chunks: list[tuple[dict, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    kl: bool,
) -> None:
    from learner.logprobs import token_stats
    from mgpo.loss import LossConfig, policy_loss

    config = LossConfig(kl_coef=0.01 if kl else 0.0)
    for inputs, mask in chunks:
        ref = None
        if kl:
            with torch.no_grad():
                ref = token_stats(reference, inputs, mask, False).logprobs
        model.train()
        stats = token_stats(model, inputs, mask)
        n = stats.logprobs.numel()
        advantages = torch.randn(n, device=stats.logprobs.device)
        old = stats.logprobs.detach()
        out = policy_loss(
            stats.logprobs,
            old,
            old,
            advantages,
            torch.ones(n, dtype=torch.bool, device=old.device),
            stats.entropy,
            ref,
            config,
        )
        (out.loss / len(chunks)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="configs/shapes/qwen2.5-vl-7b.json")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vision-layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=0, help="narrow the model (CPU smoke); 0: the 7B's widths")
    p.add_argument("--samples", type=int, default=8, help="a group: rollout.n")
    p.add_argument("--tokens", type=int, default=2048, help="tokens per sample")
    p.add_argument("--generated", type=int, default=512, help="loss tokens per sample")
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--kl", action="store_true", help="a reference model on the device, as kl_coef > 0 needs")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="benchmarks/results/gpu_learner.json")
    args = p.parse_args()

    model = build(args)
    if args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    reference = build(args).eval().requires_grad_(False) if args.kl else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    params = sum(x.numel() for x in model.parameters())
    chunks = [
        batch(model, args.micro_batch, args.tokens, args.generated, args.device)
        for _ in range(args.samples // args.micro_batch)
    ]
    times, resident = [], 0
    for i in range(args.steps + 1):  # the first warms up kernels and allocates the optimizer states
        if args.device == "cuda":
            torch.cuda.synchronize()
            if i == 1:  # after the warm-up: weights and optimizer states resident, gradients freed
                resident = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        step(model, reference, chunks, optimizer, args.kl)
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:]) if args.steps else times[0]
    tokens = args.samples * args.tokens
    flops = (6 + (2 if args.kl else 0) + (2 if args.checkpointing else 0)) * params * tokens
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    text, logits = activation_bytes(
        shape_from(model), args.micro_batch, args.tokens, args.generated, args.checkpointing
    )
    report = {
        "device": name,
        "params": params,
        "layers": args.layers,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "device")},
        "step_seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "mfu": flops / seconds / (peak * 1e12) if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
        "resident_gib": resident / 2**30 if args.device == "cuda" else None,
        "step_added_gib": (torch.cuda.max_memory_allocated() - resident) / 2**30
        if args.device == "cuda"
        else None,
        "plan_activations_and_logits_gib": (text + logits) / 2**30,
    }
    print(json.dumps(report, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
