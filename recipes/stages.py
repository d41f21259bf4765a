"""What the multi-stage recipes (reproduce, reproduce-mig, demo) share: each stage a `mgpo` subprocess, its
exact config written next to its output, a stage skipped when its output is there, wall times on file."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from runtime.lifetime import child_env

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def run_mgpo(*args: str) -> None:
    """`mgpo ARGS` in a child process (each RL run starts its own Ray and Redis); raises when it fails."""
    command = [sys.executable, "-m", "services.cli", *args]
    print("$ mgpo " + " ".join(args), flush=True)
    with subprocess.Popen(command, env=child_env()) as child:
        try:
            code = child.wait()
        except BaseException:  # interrupted: a stage left running would write into a later one
            child.terminate()
            child.wait()
            raise
    if code:
        raise subprocess.CalledProcessError(code, command)


def settle_changes(cold_start_model: Path, **changes: object) -> dict:
    """The settle stage's SFT changes (configs/reproduce/settle.yaml: the turn-1 format examples' boxes on the
    question's target) for the cold start whose model is `cold_start_model`, with `changes` over them."""
    settle = yaml.safe_load((CONFIGS / "reproduce" / "settle.yaml").read_text())
    return {**settle, "model": {"path": str(cold_start_model)}, **changes}


def write_config(source: Path, out: Path, changes: dict[str, dict | str | int]) -> Path:
    """`source` with `changes` merged in (one level deep), written to `out`: the exact config of a stage."""
    raw = yaml.safe_load(source.read_text())
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


class Stages:
    """Runs each stage once: a stage whose output exists is skipped; wall times go to timings.json."""

    def __init__(self, root: Path) -> None:
        self.path = root / "timings.json"
        self.timings: dict[str, float] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def run(self, stage: str, done: Path, work: Callable[[], object]) -> None:
        if done.exists():
            print(f"{stage}: done before ({done})", flush=True)
            return
        started = time.perf_counter()
        work()
        self.timings[stage] = round(time.perf_counter() - started, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.timings, indent=1))


def train_stage(stages: Stages, stage: str, source: Path, root: Path, run: str, changes: dict) -> Path:
    """`mgpo train` with `source` plus `changes` (written to root/configs/RUN.yaml), its run in root/RUN,
    resumed when it has checkpoints (an interrupted run goes on), skipped when its final model exists.
    Returns the final model's folder."""
    changes = {"name": run, "output_dir": str(root), **changes}
    config = write_config(source, root / "configs" / f"{run}.yaml", changes)
    folder = root / run
    resume = ["--resume"] if (folder / "checkpoints").exists() else []
    stages.run(
        stage, folder / "final" / "config.json", lambda: run_mgpo("train", "--config", str(config), *resume)
    )
    return folder / "final"
