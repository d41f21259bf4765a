"""The learner over 1 and 2 ranks, and the weight broadcast from a sharded learner, on this machine.

Real MGPO groups from vLLM-CPU (benchmarks/learner_efficiency.py's: the demo's pinned cold start, sample 0 of
every group rewarded). Each configuration is a fresh set of processes joined in one gloo group, as the
learner's Ray actors are: every rank runs `mgpo_step` on its share of the same groups through DeepSpeed,
timed per step (median after a warm-up); then the head broadcasts the weights to one receiver process, the
other ranks gathering each bucket with it under ZeRO-3. Reported: loss tokens/s per configuration, the ratio
of 2 ranks to 1, and the broadcast seconds of ZeRO-3 (gather + send) against ZeRO-1 (send).

What 2 CPU cores can show: whether 2 ranks lose or keep throughput against 1 rank when both share the same
cores (they cannot gain: each rank has half the machine), and what gathering costs a broadcast. What only a
GPU cluster shows: the speed-up of N ranks on N devices and NCCL's bandwidth (benchmarks/gpu_learner.py).

    .venv/bin/python benchmarks/learner_scaling.py [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import torch

CONFIGS = ((1, 1), (2, 1), (2, 2), (2, 3))  # (ranks, ZeRO stage)


def _rank(rank: int, world: int, stage: int, port: int, sync_port: int, args: tuple, out: str) -> None:
    import torch.distributed as dist

    from learner.engine import EngineConfig, build_deepspeed, deepspeed_callbacks, init_ranks
    from learner.gather import gathered, state_shapes
    from learner.step import Ranks, UpdateConfig, mgpo_step
    from mgpo.data.dataset import open_store
    from mgpo.loss import LossConfig
    from mgpo.models.tiny import load_policy, load_processor
    from runtime.broadcast import Address, join, plan_buckets, send

    model_dir, data, groups_file, steps = args
    init_ranks(rank, world, "127.0.0.1", port, timeout_s=600)
    made = pickle.loads(Path(groups_file).read_bytes())
    policy = load_policy(model_dir)
    engine = build_deepspeed(
        policy, torch.optim.AdamW(policy.parameters(), lr=1e-5), EngineConfig(zero_stage=stage)
    )
    backward, step = deepspeed_callbacks(engine)
    ranks = Ranks(rank, world, dist.all_reduce) if world > 1 else Ranks()
    processor, store, loss = load_processor(model_dir), open_store(data), LossConfig(kl_coef=0.0)
    times, tokens = [], 0
    for _ in range(steps + 1):  # the first is a warm-up
        dist.barrier()
        start = time.perf_counter()
        stats = mgpo_step(
            engine.module, None, made, processor, store, loss, UpdateConfig(), backward, step, ranks
        )
        times.append(time.perf_counter() - start)
        tokens = stats.tokens
    plan = plan_buckets(state_shapes(engine.module), 1 << 20)
    group = join(Address("127.0.0.1", sync_port, 2, 1), 0) if rank == 0 else None
    dist.barrier()
    start = time.perf_counter()
    for bucket in plan:
        with gathered(engine.module, [s.name for s in bucket.slots]) as part:
            if group is not None:
                send(part, [bucket], group)
    sync = time.perf_counter() - start
    if rank == 0:
        Path(out).write_text(json.dumps({"step_seconds": times[1:], "tokens": tokens, "sync_seconds": sync}))
    dist.destroy_process_group()


def _receiver(sync_port: int, model_dir: str) -> None:
    from learner.gather import state_shapes
    from mgpo.models.tiny import load_policy
    from runtime.broadcast import Address, join, plan_buckets, receive_all

    plan = plan_buckets(state_shapes(load_policy(model_dir)), 1 << 20)
    receive_all(plan, join(Address("127.0.0.1", sync_port, 2, 1), 1))


def measure(world: int, stage: int, args: tuple, tmp: Path) -> dict[str, float]:
    rendezvous = torch.distributed.TCPStore("127.0.0.1", 0, world + 1, is_master=True, wait_for_workers=False)
    sync_store = torch.distributed.TCPStore("127.0.0.1", 0, 3, is_master=True, wait_for_workers=False)
    out = tmp / f"r{world}-z{stage}.json"
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_rank, args=(r, world, stage, rendezvous.port, sync_store.port, args, str(out))
        )
        for r in range(world)
    ] + [context.Process(target=_receiver, args=(sync_store.port, args[0]))]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=900)
    if any(p.exitcode != 0 for p in processes):
        raise RuntimeError(f"{world} ranks, ZeRO-{stage}: exit codes {[p.exitcode for p in processes]}")
    result = json.loads(out.read_text())
    step = statistics.median(result["step_seconds"])
    return {
        "ranks": world,
        "zero_stage": stage,
        "step_seconds": step,
        "tokens_per_second": result["tokens"] / step,
        "sync_seconds": result["sync_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/learner_scaling.json")
    args = parser.parse_args()
    from learner_efficiency import MODEL, groups  # this folder's benchmark: the same groups

    with tempfile.TemporaryDirectory(prefix="mgpo-scaling-") as tmp:
        data = Path(tmp) / "data"
        made = groups(data, args.prompts, 8)
        (Path(tmp) / "groups.pkl").write_bytes(pickle.dumps(made))
        shared = (MODEL, str(data), str(Path(tmp) / "groups.pkl"), args.steps)
        rows = []
        for world, stage in CONFIGS:
            rows.append(measure(world, stage, shared, Path(tmp)))
            print(json.dumps(rows[-1]))
    by = {(r["ranks"], r["zero_stage"]): r for r in rows}
    report = {
        "model": MODEL,
        "groups": len(made),
        "rows": rows,
        "two_ranks_over_one_tokens_per_second": by[2, 1]["tokens_per_second"] / by[1, 1]["tokens_per_second"],
        "zero3_over_zero1_sync_seconds": by[2, 3]["sync_seconds"] / by[2, 1]["sync_seconds"],
        "machine": "2 CPU cores: the ranks share them",
    }
    print(json.dumps(report, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
