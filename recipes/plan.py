"""`mgpo plan --config FILE`: memory per device of a run's learner ranks and rollout actors, and a verdict.

Model states follow DeepSpeed's own accounting (its `estimate_zero2_model_states_mem_needs` comment: per
parameter 2 bytes of 16-bit weights, 2 of 16-bit gradients, 4 of fp32 gradients, 4 of fp32 master weights,
8 of Adam moments; fp32 training has no separate master copy), split by what each ZeRO stage shards over the
ranks; DeepSpeed's estimators are shown beside ours where they exist (ZeRO-2, ZeRO-3). Activations and logits
are an upper bound at the config's longest trajectory, from the layer shapes (a decoder layer keeps about
8 h + 2 kv + 4 i values per token: norms, q/k/v, attention output, residuals, the SwiGLU MLP's four
intermediate tensors; with gradient checkpointing only its input, h, plus one layer recomputed at a time).
The shapes come from the model folder's config.json (parameters counted on the meta device: nothing loads).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from mgpo.resize import FACTOR
from runtime.config import RunConfig

GIB = 1 << 30
HEADROOM = 0.9  # of a device's memory: the allocator's fragmentation, CUDA context, NCCL buffers
PROMPT_TOKENS = 256  # system prompt, question, options and chat markup of one MGPO trajectory, generously


class Shape(NamedTuple):
    params: int
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key (= value) width: kv heads x head dim
    vocab: int
    vision_layers: int
    vision_hidden: int
    vision_intermediate: int


def shape_of(config_json: str | Path) -> Shape:
    """The shapes of a Qwen2.5-VL config.json, its parameters counted on the meta device (no memory)."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    config = AutoConfig.from_pretrained(str(config_json))
    with torch.device("meta"):
        return shape_from(Qwen2_5_VLForConditionalGeneration._from_config(config))


def shape_from(model: object) -> Shape:
    """The layer shapes and parameter count of a built Qwen2.5-VL."""
    config = model.config  # type: ignore[attr-defined]
    text, vision = config.get_text_config(), config.vision_config
    return Shape(
        params=sum(p.numel() for p in model.parameters()),  # type: ignore[attr-defined]
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        kv_dim=text.num_key_value_heads * (text.hidden_size // text.num_attention_heads),
        vocab=text.vocab_size,
        vision_layers=vision.depth,
        vision_hidden=vision.hidden_size,
        vision_intermediate=vision.intermediate_size,
    )


@dataclass(frozen=True)
class Part:
    name: str
    gib: float
    why: str


def lora_params(shape: Shape, config: RunConfig) -> int:
    """Parameters that train under `learner.lora`: rank x (in + out) per adapted projection of every decoder
    layer, plus the modules trained in full (the vision tower's adapters, if not frozen, are left out)."""
    lora = config.learner.lora
    assert lora is not None
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    sides = {"q_proj": h + h, "k_proj": h + kv, "v_proj": h + kv, "o_proj": h + h}
    sides |= {"gate_proj": h + i, "up_proj": h + i, "down_proj": i + h}
    adapters = shape.layers * lora.rank * sum(sides.get(m, 0) for m in lora.target_modules)
    full = {"embed_tokens": shape.vocab * h, "lm_head": shape.vocab * h}
    return adapters + sum(full.get(m, 0) for m in lora.modules_to_save)


def model_states(shape: Shape, config: RunConfig) -> list[Part]:
    """Weights, gradients, master weights and Adam moments on one learner rank's device."""
    lc = config.learner
    n, stage, bf16 = lc.world_size, lc.zero_stage, config.model.dtype == "bf16"
    width = 2 if bf16 else 4
    trained = lora_params(shape, config) if lc.lora is not None else shape.params

    def sharded(bytes_per_param: float, from_stage: int) -> tuple[float, str]:
        split = stage >= from_stage
        how = f", / {n} ranks (ZeRO-{from_stage}+)" if split else ""
        return bytes_per_param * trained / (n if split else 1) / GIB, how

    if lc.lora is not None:  # the frozen base whole on every rank, and the adapters
        base = f"{width} B/param of the frozen base + {trained / 1e6:.0f} M adapter parameters (learner.lora)"
        parts = [Part("weights", width * (shape.params + trained) / GIB, base)]
    else:
        gib, how = sharded(width, 3)
        parts = [Part("weights", gib, f"{width} B/param{how}")]
    gib, how = sharded(width, 2)
    parts.append(Part("gradients", gib, f"{width} B per trained param{how}"))
    fp32 = (4 + 4 if bf16 else 0) + 8  # fp32 master + fp32 gradients (bf16 only), Adam moments
    if lc.offload_optimizer:
        parts.append(Part("optimizer states", 0.0, f"{fp32} B per trained param in CPU memory (offload)"))
    else:
        gib, how = sharded(fp32, 1)
        parts.append(
            Part("optimizer states", gib, f"{fp32} B per trained param (fp32 master, grads, Adam){how}")
        )
    if lc.kl_coef > 0 and lc.lora is None:  # with LoRA the reference is the base, adapters off
        parts.append(
            Part("reference model", width * shape.params / GIB, "kl_coef > 0: a whole frozen copy per rank")
        )
    return parts


def trajectory_tokens(config: RunConfig) -> tuple[int, int]:
    """(tokens of the longest trajectory, its model-generated tokens), within max_model_len."""
    r = config.rollout
    turns = {"grpo": 1, "mgpo": 2}.get(r.mode.value, r.max_crops + 1)  # a reply and an image per turn
    image_tokens = r.max_pixels // (FACTOR * FACTOR)
    total = PROMPT_TOKENS + turns * (image_tokens + r.max_turn_tokens)
    return min(total, r.max_model_len), turns * r.max_turn_tokens


def activation_bytes(
    shape: Shape, rows: int, tokens: int, generated: int, checkpointing: bool
) -> tuple[int, int]:
    """(activations, logits) of one forward/backward pass over `rows` samples of `tokens`, `generated` of them
    model-generated (the only positions whose logits the learner computes)."""
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    per_layer = (8 * h + 2 * kv + 4 * i) * 2  # bytes per token, 16-bit activations
    if checkpointing:  # each layer's input kept, one layer's activations recomputed at a time
        text = rows * tokens * (shape.layers * h * 2 + per_layer)
    else:
        text = rows * tokens * shape.layers * per_layer
    logits = rows * generated * shape.vocab * 4 * 3  # fp32 logits, log-softmax, probabilities (entropy)
    return text, logits


def activations(shape: Shape, config: RunConfig) -> list[Part]:
    """One forward/backward pass: `micro_batch` samples (a whole group when 0) at the longest trajectory."""
    lc = config.learner
    rows = lc.micro_batch or config.rollout.n
    tokens, generated = trajectory_tokens(config)
    text, logits = activation_bytes(shape, rows, tokens, generated, lc.gradient_checkpointing)
    how = (
        "checkpointed: each layer's input, one layer recomputed"
        if lc.gradient_checkpointing
        else "every layer's activations kept"
    )
    where = f"{rows} samples x {tokens} tokens ({'micro_batch' if lc.micro_batch else 'a whole group, rollout.n'})"
    return [
        Part("activations", text / GIB, f"{where}; {how}"),
        Part("logits", logits / GIB, f"{rows} x {generated} generated tokens x vocab {shape.vocab}, fp32 x3"),
    ]


def deepspeed_estimate(shape: Shape, config: RunConfig) -> float | None:
    """DeepSpeed's own model-state estimate per GPU (GiB) where it has one: ZeRO-2 and ZeRO-3."""
    lc = config.learner
    if lc.zero_stage in (2, 3):
        # DeepSpeed's logger writes to the stdout of its import (its accelerator line would break --json)
        with contextlib.redirect_stdout(sys.stderr):
            import deepspeed  # noqa: F401
    if lc.zero_stage == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        _, gpu = estimate_zero2_model_states_mem_needs(shape.params, lc.world_size, 1, lc.offload_optimizer)
        return gpu / GIB
    if lc.zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        largest = shape.vocab * shape.hidden  # the embedding (or lm_head): the widest single tensor
        _, gpu, _ = estimate_zero3_model_states_mem_needs(
            shape.params, largest, lc.world_size, 1, lc.offload_optimizer, False
        )
        return gpu / GIB
    return None


@dataclass(frozen=True)
class ActorPlan:
    weights_gib: float
    kv_cache_gib: float
    kv_per_sequence_gib: float
    full_length_sequences: int  # sequences of max_model_len the KV cache holds at once
    batch_sequences: int
    why: str

    @property
    def fits(self) -> bool:
        return self.full_length_sequences >= 1


@dataclass(frozen=True)
class LearnerPlan:
    parts: list[Part]
    deepspeed_model_states_gib: float | None
    usable_gib: float

    @property
    def total_gib(self) -> float:
        return sum(p.gib for p in self.parts)

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.usable_gib

    @property
    def largest(self) -> str:
        return max(self.parts, key=lambda p: p.gib).name


@dataclass(frozen=True)
class Plan:
    params: int
    shapes: str
    device_gib: float
    gpus: float
    learner: LearnerPlan
    actor: ActorPlan

    def summary(self) -> dict[str, object]:
        """Plain values for --json (verdicts included)."""
        return {
            **asdict(self),
            "learner_total_gib": self.learner.total_gib,
            "learner_fits": self.learner.fits,
            "actor_fits": self.actor.fits,
        }


def actor(shape: Shape, config: RunConfig, device_gib: float, utilization: float = 0.85) -> ActorPlan:
    """One rollout actor's GPUs (vLLM): its weights shard and the KV cache left for sequences."""
    r = config.rollout
    tp = r.tensor_parallel
    width = 2 if config.model.dtype == "bf16" else 4
    weights = width * shape.params / tp / GIB
    kv_per_token = 2 * shape.layers * shape.kv_dim * width / tp  # keys and values, every layer
    overhead = 2.0  # GiB: activations of a prefill, CUDA graphs, the sampler
    pool = max(0.0, device_gib * utilization - weights - overhead)
    sequence = kv_per_token * r.max_model_len / GIB
    return ActorPlan(
        weights_gib=weights,
        kv_cache_gib=pool,
        kv_per_sequence_gib=sequence,
        full_length_sequences=int(pool / sequence),
        batch_sequences=r.batch_prompts * r.n,
        why=f"{width} B/param / tensor_parallel {tp}; vLLM takes {utilization:.0%} of {device_gib:g} GiB, "
        f"{overhead:g} GiB of it for its activations; KV {kv_per_token / 1024:.0f} KiB/token",
    )


def plan(config: RunConfig, config_json: str | Path, device_gib: float = 80.0) -> Plan:
    """The learner rank's and the actor's memory, each with its parts and verdict."""
    shape = shape_of(config_json)
    learner = LearnerPlan(
        model_states(shape, config) + activations(shape, config),
        deepspeed_estimate(shape, config),
        device_gib * HEADROOM,
    )
    gpus = (
        config.learner.world_size * config.learner.gpus
        + config.rollout.actors * config.rollout.gpus_per_actor
    )
    return Plan(shape.params, str(config_json), device_gib, gpus, learner, actor(shape, config, device_gib))


LEVERS = (
    "learner.world_size with zero_stage 2 or 3 (shards gradients, then weights)",
    "learner.gradient_checkpointing: true (activations)",
    "learner.micro_batch: 1 or 2 (activations and logits: fewer samples per pass)",
    "learner.offload_optimizer: true (optimizer states to CPU memory)",
    "learner.kl_coef: 0 (no reference copy)",
)


def render(result: Plan) -> str:
    """The plan as a short table and a verdict per role, with what to change when something does not fit."""
    learner, act = result.learner, result.actor
    lines = [
        f"model: {result.params / 1e9:.2f} B parameters ({result.shapes})",
        f"device: {result.device_gib:g} GiB, {learner.usable_gib:.0f} usable (headroom {HEADROOM:.0%})",
        "",
        "learner, per rank:",
        *(f"  {p.name:<18}{p.gib:>8.1f} GiB  {p.why}" for p in learner.parts),
        f"  {'total':<18}{learner.total_gib:>8.1f} GiB",
    ]
    if learner.deepspeed_model_states_gib is not None:
        lines.append(
            f"  (DeepSpeed's own estimate of the model states: {learner.deepspeed_model_states_gib:.1f} GiB)"
        )
    if learner.fits:
        lines.append("  -> fits")
    else:
        lines.append(f"  -> does NOT fit (largest: {learner.largest}); levers:")
        lines += [f"     - {lever}" for lever in LEVERS]
    lines += [
        "",
        "rollout actor, per GPU:",
        f"  weights {act.weights_gib:.1f} GiB, KV cache {act.kv_cache_gib:.1f} GiB: {act.full_length_sequences} "
        f"sequences of max_model_len at once (a batch is {act.batch_sequences}; vLLM queues the rest)",
        f"  ({act.why})",
        "  -> fits"
        if act.fits
        else "  -> does NOT fit: raise rollout.tensor_parallel or lower max_model_len",
        "",
        f"GPUs: {result.gpus:g} (learner.world_size x learner.gpus + rollout.actors x rollout.gpus_per_actor)",
    ]
    return "\n".join(lines)
