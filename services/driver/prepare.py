"""What a run needs before its first step: the data, the model, Ray, and the specs of its learner and
actors (built from the run config: each component gets only the fields it uses)."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from actors.rollout_actor import ActorSpec
from learner.engine import EngineConfig
from learner.service import LearnerSpec
from learner.step import UpdateConfig
from mgpo.loss import LossConfig
from mgpo.resize import PixelBudget
from runtime.config import RunConfig


def prepare_data(config: RunConfig, console: Console) -> Path:
    """The run's dataset folder; a synthetic set is written there when the config names no data."""
    folder = config.data_dir
    if config.data.path is None and not (folder / "dataset.json").exists():
        from mgpo.data.dataset import write_synthetic

        console.print(f"writing {config.data.synth_n} synthetic high-resolution samples to {folder}")
        write_synthetic(folder, n=config.data.synth_n, seed=config.data.synth_seed)
    return folder


def prepare_model(config: RunConfig, data_dir: Path, console: Console) -> str:
    """The policy's HF folder: the configured checkpoint, or the tiny model built (and format-warmed) once
    into the run folder."""
    cfg = config.model
    if cfg.path != "tiny":
        return cfg.path
    folder = config.run_dir / "model"
    if (folder / "config.json").exists():
        return str(folder)
    from mgpo.models.tiny import build_tiny

    budget = PixelBudget(config.rollout.min_pixels, config.rollout.max_pixels)
    random_init = config.run_dir / "model-random" if cfg.warmup_steps else folder
    start = time.perf_counter()
    build_tiny(random_init, tokenizer=cfg.tiny_tokenizer, size=cfg.tiny_size, seed=config.seed, budget=budget)
    console.print(
        f"built the tiny Qwen2.5-VL ({cfg.tiny_size}) in {random_init} ({time.perf_counter() - start:.1f}s)"
    )
    if cfg.warmup_steps:
        from mgpo.models.warmup import format_warmup

        start = time.perf_counter()
        format_warmup(
            random_init, data_dir, folder, budget, cfg.warmup_prompts, cfg.warmup_steps, config.seed
        )
        console.print(
            f"format warm start ({cfg.warmup_steps} steps on {cfg.warmup_prompts} prompts, random boxes and "
            f"letters: no answer supervision) -> {folder} ({time.perf_counter() - start:.1f}s)"
        )
    return str(folder)


def learner_spec(config: RunConfig, model_path: str, redis_url: str, resume: bool) -> LearnerSpec:
    lc = config.learner
    return LearnerSpec(
        model_path=model_path,
        redis_url=redis_url,
        run=config.name,
        image_store=str(config.data_dir / "images"),
        run_dir=str(config.run_dir),
        loss=LossConfig(
            clip=lc.clip,
            kl_coef=lc.kl_coef,
            entropy_coef=lc.entropy_coef,
            is_cap=lc.is_cap,
            scale_rewards=lc.scale_rewards,
            decision_weight=lc.decision_weight,
        ),
        engine=EngineConfig(
            zero_stage=lc.zero_stage,
            dtype=config.model.dtype,
            max_grad_norm=lc.max_grad_norm,
            offload_optimizer=lc.offload_optimizer,
        ),
        update=UpdateConfig(
            ppo_epochs=lc.ppo_epochs,
            minibatches=lc.minibatches,
            temperature=config.rollout.temperature,
            gradient_checkpointing=lc.gradient_checkpointing,
            micro_batch=lc.micro_batch,
        ),
        weight_decay=lc.weight_decay,
        lr=lc.lr,
        groups_per_step=lc.groups_per_step,
        world_size=lc.world_size,
        lora=lc.lora,
        cpu_affinity=tuple(lc.cpu_affinity),
        max_staleness=lc.max_staleness,
        bucket_bytes=lc.bucket_mb << 20,
        broadcast_backend=lc.broadcast_backend,
        sync_timeout_s=lc.sync_timeout_s,
        keep_checkpoints=lc.keep_checkpoints,
        resume=resume,
        seed=config.seed,
        metrics_port=config.metrics.learner_port if config.metrics.enabled else None,
    )


def actor_spec(
    config: RunConfig,
    model_path: str,
    redis_url: str,
    name: str,
    index: int,
    weights: str | None,
    version: int,
) -> ActorSpec:
    """The spec of the run's `index`-th actor (its seed differs from every other actor's)."""
    r = config.rollout
    return ActorSpec(
        name=name,
        model_path=model_path,
        engine=r.engine,
        redis_url=redis_url,
        run=config.name,
        image_store=str(config.data_dir / "images"),
        mode=r.mode.value,
        max_crops=r.max_crops,
        n=r.n,
        temperature=r.temperature,
        top_p=r.top_p,
        max_turn_tokens=r.max_turn_tokens,
        max_model_len=r.max_model_len,
        min_pixels=r.min_pixels,
        max_pixels=r.max_pixels,
        batch_prompts=r.batch_prompts,
        box_rule=r.box_rule.value,
        iou_reward=r.iou_reward,
        format_weight=r.format_weight,
        invalid_crop=r.invalid_crop,
        direct_bonus=r.direct_bonus,
        box_hint=r.box_hint,
        claim_idle_ms=config.queue.claim_idle_ms,
        max_deliveries=config.queue.max_deliveries,
        seed=config.seed + 1000 * index,
        dtype=config.model.dtype,
        tensor_parallel=r.tensor_parallel,
        stream_weights=r.stream_weights,
        cpu_affinity=tuple(r.cpu_affinity),
        weights=weights,
        version=version,
        metrics_port=config.metrics.actor_port if config.metrics.enabled else None,
        recent=config.metrics.recent,
    )
