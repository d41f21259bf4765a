"""`mgpo reproduce`: the paper's effect on a CPU, end to end, with one command (README, Results).

1. `mgpo sft` (configs/reproduce/sft.yaml): the cold-start model, grounding and recognition skills only;
   then a short settle (configs/reproduce/settle.yaml: the turn-1 format examples' boxes on the right tag).
2. RL train and test splits of the same synthetic set (other seeds than the cold start's images).
3. `mgpo train` for each method (configs/reproduce/<method>.yaml): MGPO, single-turn GRPO, multi-turn, all
   from the settled model with the same steps, prompts, samples and seed.
4. `mgpo eval` on the test split, each method in its own mode, of the settled model (`<run>/base/`) and
   of the RL policy (`<run>/final/`), with the settled model as the base for the crop-alone ratio.
5. `mgpo report`: curves and the results table; wall times per stage in `timings.json`; `seed.json`: the
   MGPO run's valid grounding at the start and end of RL and the MGPO - GRPO gap on the test split.

`--seeds 0,1,2` runs it all once per seed (cold start, data and RL seeds all shifted), each in `seed-N/`,
and writes `seeds.md`, one row per seed.

Every stage is a subprocess (each RL run starts its own Ray and Redis) and is skipped when its output is
already there, so an interrupted reproduction continues where it stopped. `--smoke` runs every stage with
a few steps and questions (CI: that the pipeline works, not what it reaches).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from recipes.stages import CONFIGS as ALL_CONFIGS
from recipes.stages import Stages, run_mgpo, settle_changes, train_stage, write_config
from runtime.config import SFTConfig, load_sft_config

METHODS = ("mgpo", "grpo", "multiturn")
CONFIGS = ALL_CONFIGS / "reproduce"
TRAIN_SEED, TEST_SEED = 0, 1
SEED_STRIDE = 1000  # seed N shifts every data seed by N * 1000: no image is shared between seeds
START_STEPS, END_STEPS = 10, 20  # "start" and "end" of RL: the mean over the first 10 and last 20 steps


class Plan:
    """The sizes of one reproduction: the full experiment or the smoke version."""

    def __init__(self, smoke: bool, seed: int = 0, methods: tuple[str, ...] = METHODS) -> None:
        self.seed, self.methods = seed, methods
        self.sft_steps = 12 if smoke else None  # None: the config's
        self.rl_steps = 2 if smoke else None
        self.train_n = 16 if smoke else 512
        self.test_n = 8 if smoke else 96


def reproduce(
    out: str = "out/reproduce",
    smoke: bool = False,
    seeds: tuple[int, ...] = (0,),
    methods: tuple[str, ...] = METHODS,
) -> dict[str, object]:
    """One reproduction in `out`, or (several seeds) one per seed in `out/seed-N` and a table in `out/seeds.md`."""
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        raise ValueError(f"methods {sorted(unknown) or '(none)'}: choose from {', '.join(METHODS)}")
    if len(seeds) == 1:
        return _reproduce_seed(Path(out), Plan(smoke, seeds[0], methods))
    results = [_reproduce_seed(Path(out) / f"seed-{seed}", Plan(smoke, seed, methods)) for seed in seeds]
    table = seeds_table([r["seed"] for r in results])  # type: ignore[misc]
    (Path(out) / "seeds.md").write_text(table)
    print(table, flush=True)
    return {"seeds": results, "table": str(Path(out) / "seeds.md")}


def _reproduce_seed(root: Path, plan: Plan) -> dict[str, object]:
    stages = Stages(root)
    sft = _cold_start(root, plan, stages)
    sft = _settle(root, plan, sft, stages)
    data = _splits(root, plan, sft, stages)
    runs = [str(_method(method, root, plan, sft, data, stages)) for method in plan.methods]
    stages.run(
        "report",
        root / "report" / "results.md",
        lambda: run_mgpo("report", *runs, "--out", str(root / "report")),
    )
    seed = seed_summary(root, plan.seed)
    (root / "seed.json").write_text(json.dumps(seed, indent=1))
    total = round(sum(stages.timings.values()), 1)
    print(f"reproduction: {total} s of stages; report in {root / 'report'}", flush=True)
    return {"timings": stages.timings, "total_seconds": total, "report": str(root / "report"), "seed": seed}


def seed_summary(root: Path, seed: int) -> dict[str, object]:
    """What the issue asks of each seed: MGPO's valid grounding (training rollouts, temperature 1) at the start
    and end of RL, and each method's test accuracy before and after RL."""
    from runtime.metrics_log import read_metrics

    out: dict[str, object] = {"seed": seed}
    for method in METHODS:
        run = root / method
        if not (run / "final").exists():
            continue
        steps = [s["valid_grounding_ratio"] for s in read_metrics(run, "step")]
        if steps:
            out[f"{method}_valid_start"] = sum(steps[:START_STEPS]) / len(steps[:START_STEPS])
            out[f"{method}_valid_end"] = sum(steps[-END_STEPS:]) / len(steps[-END_STEPS:])
        for stage in ("base", "final"):
            result = run / stage / f"eval-{method}.json"
            if result.exists():
                out[f"{method}_test_{stage}"] = json.loads(result.read_text())["accuracy"]
    if "mgpo_test_final" in out and "grpo_test_final" in out:
        out["mgpo_minus_grpo"] = out["mgpo_test_final"] - out["grpo_test_final"]  # type: ignore[operator]
    return out


def seeds_table(rows: list[dict[str, object]]) -> str:
    """Markdown: one row per seed (a missing number shows as "-")."""
    columns = (
        ("seed", "seed"),
        ("mgpo_valid_start", f"MGPO valid, first {START_STEPS} steps"),
        ("mgpo_valid_end", f"MGPO valid, last {END_STEPS} steps"),
        ("mgpo_test_base", "MGPO test acc before"),
        ("mgpo_test_final", "MGPO test acc after"),
        ("grpo_test_final", "GRPO test acc after"),
        ("mgpo_minus_grpo", "MGPO - GRPO"),
    )
    cell = lambda v: "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cold_start(root: Path, plan: Plan, stages: Stages) -> SFTConfig:
    """1. `mgpo sft`: the cold-start model (the smoke run's steps and splits cut to a few)."""
    shift = plan.seed * SEED_STRIDE
    raw = yaml.safe_load((CONFIGS / "sft.yaml").read_text())["data"]
    changes: dict = {
        "output_dir": str(root),
        "seed": plan.seed,
        "data": {"train_seed": raw["train_seed"] + shift, "eval_seed": raw["eval_seed"] + shift},
    }
    if plan.sft_steps:
        changes["data"].update(train_n=8, eval_n=2)
    return _sft_stage("sft", root, plan, changes, stages)


def _settle(root: Path, plan: Plan, cold_start: SFTConfig, stages: Stages) -> SFTConfig:
    """1b. More SFT of the cold start, its format boxes on the right tag (configs/reproduce/settle.yaml over
    sft.yaml)."""
    changes = settle_changes(
        cold_start.run_dir / "model",
        output_dir=str(root),
        seed=plan.seed,
        data=cold_start.data.model_dump(mode="json", exclude_none=True),
    )
    return _sft_stage("settle", root, plan, changes, stages)


def _sft_stage(stage: str, root: Path, plan: Plan, changes: dict, stages: Stages) -> SFTConfig:
    """`mgpo sft` with configs/reproduce/sft.yaml and `changes` merged in (the smoke run's schedule cut)."""
    if plan.sft_steps:
        changes.update(steps=plan.sft_steps, eval_every=plan.sft_steps, lr_warmup_steps=0, lr_decay_steps=0)
    path = write_config(CONFIGS / "sft.yaml", root / "configs" / f"{stage}.yaml", changes)
    sft = load_sft_config(path)
    stages.run(
        stage, sft.run_dir / "summary.json", lambda: run_mgpo("sft", "--config", str(path), "--resume")
    )
    return sft


def _splits(root: Path, plan: Plan, sft: SFTConfig, stages: Stages) -> dict[str, Path]:
    """2. The RL train and test splits of the cold start's synthetic set, with other seeds."""
    from mgpo.data.dataset import META_FILE, write_synthetic

    knobs = sft.data.knobs()
    data = {"train": root / "data" / "train", "test": root / "data" / "test"}
    shift = plan.seed * SEED_STRIDE
    splits = (("train", TRAIN_SEED + shift, plan.train_n), ("test", TEST_SEED + shift, plan.test_n))
    for split, seed, n in splits:
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
    """3-4. RL with one method from the settled cold start, then the eval of it and of the policy."""
    base = sft.run_dir / "model"
    changes: dict = {"seed": plan.seed, "model": {"path": str(base)}, "data": {"path": str(data["train"])}}
    if plan.rl_steps:
        changes["steps"] = plan.rl_steps
    train_stage(stages, f"train-{method}", CONFIGS / f"{method}.yaml", root, method, changes)
    run = root / method
    budget = ["--min-pixels", str(sft.min_pixels), "--max-pixels", str(sft.max_pixels)]
    for model, stage in ((base, "base"), (run / "final", "final")):
        result = run / stage / f"eval-{method}.json"
        stages.run(
            f"eval-{method}-{stage}",
            result,
            lambda m=model, r=result: run_mgpo(
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
