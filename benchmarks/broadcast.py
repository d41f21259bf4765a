"""Weight broadcast learner -> 2 receivers over gloo: flat buckets vs one broadcast per tensor (the reference,
measured in the same run). Prints MB/s and the ratio; writes benchmarks/results/broadcast.json.

    .venv/bin/python benchmarks/broadcast.py [--size s] [--tokenizer qwen] [--bucket-mb 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from mgpo.models.tiny import build_tiny, load_policy
from mgpo.models.weights import policy_state
from runtime.broadcast import plan_for, receive, send
from runtime.redis_server import free_port

RECEIVERS = 2


def _member(rank: int, port: int, state: dict, bucket_bytes: int, repeats: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=RECEIVERS + 1
    )
    timings = {}
    for label, size in (("per_tensor", 1), ("bucketed", bucket_bytes)):
        plan = plan_for(state, size)  # size 1: every tensor is its own bucket, i.e. one call per tensor
        best = float("inf")
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            if rank == 0:
                send(state, plan)
            else:
                for _ in receive(plan):
                    pass
            dist.barrier()
            best = min(best, time.perf_counter() - start)
        timings[label] = {"seconds": best, "calls": len(plan)}
    if rank == 0:
        Path(out).write_text(json.dumps(timings))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="s", choices=("xs", "s", "m"))
    parser.add_argument("--tokenizer", default="qwen", choices=("qwen", "small"))
    parser.add_argument("--bucket-mb", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/broadcast.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mgpo-bcast-"))
    state = {
        k: v.clone()
        for k, v in policy_state(load_policy(build_tiny(work / "m", args.tokenizer, args.size))).items()
    }
    total = sum(v.numel() * v.element_size() for v in state.values())
    timing_file = str(work / "t.json")
    mp.start_processes(
        _member,
        args=(free_port(), state, args.bucket_mb << 20, args.repeats, timing_file),
        nprocs=RECEIVERS + 1,
        start_method="spawn",
        join=True,
    )
    timings = json.loads(Path(timing_file).read_text())
    result = {
        "model": {
            "size": args.size,
            "tokenizer": args.tokenizer,
            "tensors": len(state),
            "megabytes": round(total / 1e6, 1),
        },
        "receivers": RECEIVERS,
        "backend": "gloo",
        "bucket_mb": args.bucket_mb,
    }
    for label, t in timings.items():
        result[label] = {
            "calls": t["calls"],
            "seconds": round(t["seconds"], 4),
            "mb_per_s": round(total / t["seconds"] / 1e6, 1),
        }
    result["bucketed_speedup"] = round(timings["per_tensor"]["seconds"] / timings["bucketed"]["seconds"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
