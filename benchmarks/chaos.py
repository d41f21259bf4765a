"""Chaos: short training runs on the tiny model, each with one process SIGKILLed at a random moment, then the
ledger is read. Not a timed test: it measures what survives.

    .venv/bin/python benchmarks/chaos.py [--trials 20] [--targets actor,learner,redis,driver] [--seed 0]

Each trial is a real `mgpo train` (local Ray, the DeepSpeed learner, one HF-engine rollout actor, Redis with
AOF run by this script as a cluster would run it) over PROMPTS prompts. After `kill_at` learner steps one
target is killed: a rollout actor or the learner (the driver replaces them), Redis (restarted on the same
port and data, as a pod would be; the run waits for it), or the driver (started again with --resume, as an
operator or a restart policy would). A driver that exits non-zero is resumed too (at most twice). Then the
ledger the learner keeps (`ledger.jsonl`, the surviving timeline) must show every prompt used, dropped as
stale or dead-lettered exactly once, none lost, no group used twice. Results: benchmarks/results/chaos.json and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mgpo.data.dataset import write_synthetic  # noqa: E402
from mgpo.models.tiny import build_tiny  # noqa: E402
from mgpo.resize import FACTOR, PixelBudget  # noqa: E402
from runtime.metrics_log import read_metrics  # noqa: E402
from runtime.redis_server import RedisServer  # noqa: E402

PROMPTS = 12
GROUPS_PER_STEP = 2
TARGETS = ("actor", "learner", "redis", "driver")
BUDGET = PixelBudget(64 * FACTOR * FACTOR, 256 * FACTOR * FACTOR)


def prepare(root: Path) -> tuple[Path, Path]:
    """The tiny model and the dataset, shared by every trial."""
    model = root / "model"
    if not (model / "config.json").exists():
        build_tiny(model, tokenizer="small", size="xs", seed=0, budget=BUDGET)
    data = root / "data"
    if not (data / "dataset.json").exists():
        write_synthetic(data, PROMPTS, seed=0, progress=False)
    return model, data


def trial_config(root: Path, name: str, model: Path, data: Path) -> Path:
    config = {
        "name": name,
        "output_dir": str(root / "runs"),
        "model": {"path": str(model)},
        "rollout": {
            "engine": "hf",
            "n": 2,
            "max_turn_tokens": 16,
            "max_model_len": 1024,
            "min_pixels": BUDGET.min_pixels,
            "max_pixels": BUDGET.max_pixels,
            "batch_prompts": 2,
        },
        "learner": {
            "lr": 1e-4,
            "groups_per_step": GROUPS_PER_STEP,
            "kl_coef": 0.0,
            "checkpoint_every": 1,
            "step_timeout_s": 2,
            "sync_timeout_s": 30,
        },
        "queue": {"claim_idle_ms": 3000},
        "data": {"path": str(data)},
        "metrics": {"enabled": False},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config: Path, env: dict[str, str], log: Path, resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "services.cli", "train", "--config", str(config)]
    # its own session: killing "the driver" kills it with the local Ray it started, as a lost pod would
    return subprocess.Popen(
        [*args, "--resume"] if resume else args,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )


def version(run_dir: Path) -> int:
    steps = read_metrics(run_dir, "step")
    return int(steps[-1]["version"]) if steps else 0


def processes(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "processes.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def kill(
    target: str, run_dir: Path, driver: subprocess.Popen, server: RedisServer, rng: random.Random
) -> str:
    """SIGKILL the target; returns what was killed (or why nothing was)."""
    pids = processes(run_dir).get("pids", {})
    if target == "actor":
        actors = sorted(n for n in pids if not n.startswith("learner"))
        if not actors:
            return "no actor running"
        name = rng.choice(actors)
        os.kill(pids[name], signal.SIGKILL)
        return name
    if target == "learner":
        os.kill(pids["learner"], signal.SIGKILL)
        return "learner"
    if target == "redis":
        server.kill()
        time.sleep(1.0)  # down for a second, then back on the same port and AOF, as a restarted pod
        server.start()
        return "redis"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    return "driver"


def ledger(run_dir: Path) -> dict[str, list[str]]:
    path = run_dir / "ledger.jsonl"
    entries = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    return {key: [g for e in entries for g in e.get(key, [])] for key in ("used", "stale", "duplicate")}


def wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def run_trial(root: Path, index: int, target: str, rng: random.Random) -> dict[str, object]:
    model, data = prepare(root)
    name = f"t{index}"
    config, log = trial_config(root, name, model, data), root / f"{name}.log"
    run_dir = root / "runs" / name
    server = RedisServer(data_dir=root / f"redis-{index}").start()
    env = {**os.environ, "MGPO_REDIS_URL": server.url, "PYTHONWARNINGS": "ignore"}
    started = time.monotonic()
    kill_at = rng.randint(1, PROMPTS // GROUPS_PER_STEP - 2)
    driver = launch(config, env, log, resume=False)
    try:
        reached = wait(lambda: version(run_dir) >= kill_at or driver.poll() is not None, 600)
        killed = (
            kill(target, run_dir, driver, server, rng) if reached and driver.poll() is None else "nothing"
        )
        resumes = 0
        while True:
            code = driver.wait(timeout=900)
            if code == 0 or resumes == 2:
                break
            resumes += 1  # a dead driver (killed, or failed on the outage) is started again
            driver = launch(config, env, log, resume=True)
        client = redis.Redis.from_url(server.url)
        dead = int(client.xlen(f"mgpo:{name}:dead"))
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        server.stop()
    book = ledger(run_dir)
    accounted = set(book["used"]) | set(book["stale"])
    return {
        "trial": index,
        "target": target,
        "kill_at_step": kill_at,
        "killed": killed,
        "resumes": resumes,
        "exit_code": code,
        "steps": version(run_dir),
        "prompts": PROMPTS,
        "used": len(set(book["used"])),
        "stale": len(set(book["stale"])),
        "dead": dead,
        "duplicates_dropped": len(book["duplicate"]),
        "prompts_lost": PROMPTS - len(accounted) - dead,
        "groups_used_twice": len(book["used"]) - len(set(book["used"])),
        "ok": code == 0 and len(accounted) + dead == PROMPTS and len(book["used"]) == len(set(book["used"])),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=str(ROOT / "out" / "chaos"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "chaos.json"))
    args = parser.parse_args()
    targets = args.targets.split(",")
    rng, root = random.Random(args.seed), Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for index in range(args.trials):
        result = run_trial(root, index, targets[index % len(targets)], rng)
        results.append(result)
        print(json.dumps(result), flush=True)
        Path(args.out).write_text(json.dumps({"trials": results, "summary": summarize(results)}, indent=1))
    print(json.dumps(summarize(results), indent=1))


def summarize(results: list[dict[str, object]]) -> dict[str, object]:
    by_target: dict[str, dict[str, int]] = {}
    for r in results:
        row = by_target.setdefault(str(r["target"]), {"trials": 0, "ok": 0, "resumes": 0})
        row["trials"] += 1
        row["ok"] += int(bool(r["ok"]))
        row["resumes"] += int(r["resumes"])  # type: ignore[arg-type]
    return {
        "trials": len(results),
        "ok": sum(bool(r["ok"]) for r in results),
        "prompts_lost": sum(int(r["prompts_lost"]) for r in results),  # type: ignore[arg-type]
        "groups_used_twice": sum(int(r["groups_used_twice"]) for r in results),  # type: ignore[arg-type]
        "by_target": by_target,
    }


if __name__ == "__main__":
    main()
