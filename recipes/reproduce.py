"""`mgpo reproduce`: the paper's effect on a CPU, end to end, with one command (README, Results).

1. `mgpo sft` (configs/reproduce/sft.yaml): the cold-start model, grounding and recognition skills only.
2. RL train and test splits of the same synthetic set (other seeds than the cold start's images).
3. `mgpo train` for each method (configs/reproduce/<method>.yaml): MGPO, single-turn GRPO, multi-turn, all
   from the cold-start model with the same steps, prompts, samples and seed.
4. `mgpo eval` on the test split, each method in its own mode, of the cold-start model (`<run>/base/`) and
   of the RL policy (`<run>/final/`), with the cold-start model as the base for the crop-alone ratio.
5. `mgpo report`: curves and the results table; wall times per stage in `timings.json`.

Every stage is a subprocess (each RL run starts its own Ray and Redis) and is skipped when its output is
already there, so an interrupted reproduction continues where it stopped. `--smoke` runs every stage with
a few steps and questions (CI: that the pipeline works, not what it reaches).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from runtime.config import SFTConfig, load_sft_config

METHODS = ("mgpo", "grpo", "multiturn")
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "reproduce"
TRAIN_SEED, TEST_SEED = 0, 1


class Plan:
    """The sizes of one reproduction: the full experiment or the smoke version."""

    def __init__(self, smoke: bool) -> None:
        self.sft_steps = 12 if smoke else None  # None: the config's
        self.rl_steps = 2 if smoke else None
        self.train_n = 16 if smoke else 512
        self.test_n = 8 if smoke else 96


def _mgpo(*args: str) -> None:
    command = [sys.executable, "-m", "services.cli", *args]
    print("$ mgpo " + " ".join(args), flush=True)
    with subprocess.Popen(command) as child:
        try:
            code = child.wait()
        except BaseException:  # interrupted: a stage left running would write into a later reproduction
            child.terminate()
            child.wait()
            raise
    if code:
        raise subprocess.CalledProcessError(code, command)


def _write_config(source: Path, out: Path, changes: dict[str, dict | str | int]) -> Path:
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


def reproduce(out: str = "out/reproduce", smoke: bool = False) -> dict[str, object]:
    plan, root = Plan(smoke), Path(out)
    stages = Stages(root)
    sft = _cold_start(root, plan, stages)
    data = _splits(root, plan, sft, stages)
    runs = [str(_method(method, root, plan, sft, data, stages)) for method in METHODS]
    stages.run(
        "report",
        root / "report" / "results.md",
        lambda: _mgpo("report", *runs, "--out", str(root / "report")),
    )
    total = round(sum(stages.timings.values()), 1)
    print(f"reproduction: {total} s of stages; report in {root / 'report'}", flush=True)
    return {"timings": stages.timings, "total_seconds": total, "report": str(root / "report")}


def _cold_start(root: Path, plan: Plan, stages: Stages) -> SFTConfig:
    """1. `mgpo sft`: the cold-start model (the smoke run's steps and splits cut to a few)."""
    changes: dict = {"output_dir": str(root)}
    if plan.sft_steps:
        changes.update(
            steps=plan.sft_steps,
            eval_every=plan.sft_steps,
            lr_warmup_steps=0,
            lr_decay_steps=0,
            data={"train_n": 8, "eval_n": 2},
        )
    path = _write_config(CONFIGS / "sft.yaml", root / "configs" / "sft.yaml", changes)
    sft = load_sft_config(path)
    stages.run("sft", sft.run_dir / "summary.json", lambda: _mgpo("sft", "--config", str(path), "--resume"))
    return sft


def _splits(root: Path, plan: Plan, sft: SFTConfig, stages: Stages) -> dict[str, Path]:
    """2. The RL train and test splits of the cold start's synthetic set, with other seeds."""
    from mgpo.data.dataset import META_FILE, write_synthetic

    knobs = sft.data.knobs()
    data = {"train": root / "data" / "train", "test": root / "data" / "test"}
    for split, seed, n in (("train", TRAIN_SEED, plan.train_n), ("test", TEST_SEED, plan.test_n)):
        stages.run(
            f"data-{split}",
            data[split] / META_FILE,  # written last: a split cut short is made again
            lambda split=split, seed=seed, n=n: write_synthetic(
                data[split], n, seed, knobs=knobs, image_format="png", progress=False
            ),
        )
    return data


def _method(
    method: str, root: Path, plan: Plan, sft: SFTConfig, data: dict[str, Path], stages: Stages
) -> Path:
    """3-4. RL with one method from the cold-start model, then the eval of the cold start and of the policy."""
    base = sft.run_dir / "model"
    changes: dict = {
        "output_dir": str(root),
        "model": {"path": str(base)},
        "data": {"path": str(data["train"])},
    }
    if plan.rl_steps:
        changes["steps"] = plan.rl_steps
    config = _write_config(CONFIGS / f"{method}.yaml", root / "configs" / f"{method}.yaml", changes)
    run = root / method
    resume = ["--resume"] if (run / "checkpoints").exists() else []  # an interrupted run goes on
    stages.run(
        f"train-{method}",
        run / "final" / "config.json",
        lambda: _mgpo("train", "--config", str(config), *resume),
    )
    budget = ["--min-pixels", str(sft.min_pixels), "--max-pixels", str(sft.max_pixels)]
    for model, stage in ((base, "base"), (run / "final", "final")):
        result = run / stage / f"eval-{method}.json"
        stages.run(
            f"eval-{method}-{stage}",
            result,
            lambda m=model, r=result: _mgpo(
                "eval",
                "--model",
                str(m),
                "--data",
                str(data["test"]),
                "--mode",
                method,
                "--base",
                str(base),
                "--out",
                str(r),
                *budget,
            ),
        )
    return run
