"""The demo run twice in one go: synchronous on-policy (max_staleness 0) against asynchronous (max_staleness 1),
same config, seed and machine. Prints trajectories/s, learner step time, learner wait share, weight-sync time
and bytes/s for each and the async/sync ratios; writes benchmarks/results/train_sync_vs_async.json.

    .venv/bin/python benchmarks/train_sync_vs_async.py [--config configs/demo-cpu.yaml] [--steps 16]
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
    parser.add_argument("--out", default="benchmarks/results/train_sync_vs_async.json")
    args = parser.parse_args()
    base = load_config(args.config)
    results = {}
    with tempfile.TemporaryDirectory(prefix="mgpo-bench-") as tmp:
        for label, staleness in (("sync", 0), ("async", 1)):
            learner = base.learner.model_copy(update={"max_staleness": staleness, "sync_every": 1})
            config = base.model_copy(
                update={"name": label, "output_dir": tmp, "steps": args.steps, "learner": learner}
            )
            if label == "async":  # the same model and data as the sync run: no rebuild, no second warm start
                for part in ("model", "model-random", "data"):
                    if (Path(tmp) / "sync" / part).exists():
                        shutil.copytree(Path(tmp) / "sync" / part, Path(tmp) / "async" / part)
            summary = Trainer(config).run()
            results[label] = {k: summary[k] for k in KEYS} | {"steps": summary["steps"]}
    ratios = {k: results["async"][k] / results["sync"][k] for k in KEYS if results["sync"][k]}
    report = {"config": args.config, "steps": args.steps, **results, "async_over_sync": ratios}
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
