"""`mgpo demo` (make demo): the paper's effect in a few minutes on 2 CPU cores.

1. The two pinned models are checked against their manifests (file hashes, the config that made each):
   models/demo-cold-start (the SFT skills: grounding and recognition, never the combined task) and
   models/demo-rl-start (a short second SFT of it that boxes the MGPO prompt's questions less often), where
   RL starts.
2. A train and a held-out split of the same synthetic set (other seeds than the cold start's images).
3. `mgpo eval` of the RL start on the held-out split: accuracy, valid grounding, crop holds the target.
4. `mgpo train` (configs/demo/mgpo.yaml): MGPO RL with one vLLM actor, the DeepSpeed learner, the async loop,
   the answer reward alone. The valid-grounding ratio is printed every step: it starts low and climbs.
5. `mgpo eval` of the RL policy, `mgpo report` (PNG of reward, accuracy and valid grounding per step), and a
   before/after table with the paths to the curves, the run folder and the viewer.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recipes.pinned import current_commit, pin, verify
from recipes.stages import CONFIGS, Stages, run_mgpo, write_config
from runtime.config import SFTConfig, load_config, load_sft_config

ROOT = CONFIGS.parent
COLD_START = ROOT / "models" / "demo-cold-start"
COLD_START_CONFIG = CONFIGS / "demo" / "cold-start.yaml"
RL_START = ROOT / "models" / "demo-rl-start"  # trained from COLD_START; the demo's RL starts here
RL_START_CONFIG = CONFIGS / "demo" / "rl-start.yaml"
PINNED = ((COLD_START, COLD_START_CONFIG), (RL_START, RL_START_CONFIG))  # in the order they are made
RL_CONFIG = CONFIGS / "demo" / "mgpo.yaml"
REBUILD = "mgpo demo --rebuild-cold-start"
MARKER = ".mgpo-demo"  # in every folder a demo made, from its first moment: only such a folder is emptied
TRAIN_SEED, TEST_SEED = 5000, 5001  # not the cold start's seeds (1100, 1200), not the reproduction's
WINDOW = 10  # "start" and "end" of RL: the mean valid-grounding ratio over the first and last 10 steps
TABLE = (
    ("accuracy", "accuracy"),
    ("valid_grounding_ratio", "valid grounding"),
    ("crop_holds_target_ratio", "crop holds the target"),
)


class Plan:
    """The demo's sizes: the full run or (tests) a smoke version of every stage."""

    def __init__(self, smoke: bool = False) -> None:
        self.train_n, self.test_n = (8, 4) if smoke else (128, 48)
        self.rl_steps = 2 if smoke else None  # None: the config's


def run_demo(out: str | Path = "out/demo", smoke: bool = False) -> dict[str, object]:
    console = Console(soft_wrap=True)
    out = Path(out).resolve()
    for folder, config in PINNED:
        manifest = verify(folder, config, REBUILD)
        scores = manifest.get("held_out", {})
        console.print(
            f"[bold]pinned[/] {folder.relative_to(ROOT)}: files and config match its manifest (made at "
            f"{str(manifest.get('commit', '?'))[:12]}; held-out grounding "
            f"{scores.get('grounding_accuracy', '?')}, recognition {scores.get('recognition_accuracy', '?')})"
        )
    _empty(out)
    plan, stages = Plan(smoke), Stages(out)
    sft = load_sft_config(COLD_START_CONFIG)
    data = _splits(out, plan, sft, stages)
    run = _train_and_eval(out, plan, sft, data, stages)
    stages.run(
        "report",
        out / "report" / "results.md",
        lambda: run_mgpo("report", str(run), "--out", str(out / "report")),
    )
    summary = demo_summary(run, out / "report")
    # the viewer reads the run's Redis: `mgpo serve` with the run folder as its state folder reopens it
    summary["serve_config"] = str(out / "serve.yaml")
    (out / "serve.yaml").write_text(f"state_dir: {run}\n")
    (out / "summary.json").write_text(json.dumps({**summary, "timings": stages.timings}, indent=1))
    _show(console, summary, stages.timings)
    return summary


def _empty(out: Path) -> None:
    """A demo always starts over (its numbers then come from this run alone), but only ever deletes a folder
    an earlier demo made (its MARKER is there, written first) or an empty one: `--out` may be mistyped."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise FileExistsError(f"{out} holds files no demo made (no {MARKER}): choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by mgpo demo: emptied by the next one\n")


def _splits(out: Path, plan: Plan, sft: SFTConfig, stages: Stages) -> dict[str, Path]:
    from mgpo.data.dataset import META_FILE, write_synthetic

    data = {"train": out / "data" / "train", "test": out / "data" / "test"}
    for split, seed, n in (("train", TRAIN_SEED, plan.train_n), ("test", TEST_SEED, plan.test_n)):
        stages.run(
            f"data-{split}",
            data[split] / META_FILE,
            lambda split=split, seed=seed, n=n: write_synthetic(
                data[split], n, seed, knobs=sft.data.knobs(), image_format="png", progress=True
            ),
        )
    return data


def _train_and_eval(out: Path, plan: Plan, sft: SFTConfig, data: dict[str, Path], stages: Stages) -> Path:
    changes: dict = {
        "output_dir": str(out.parent),
        "name": out.name,
        "model": {"path": str(RL_START)},
        "data": {"path": str(data["train"])},
    }
    if plan.rl_steps:
        changes["steps"] = plan.rl_steps
    config = write_config(RL_CONFIG, out / "configs" / "mgpo.yaml", changes)
    run = load_config(config).run_dir
    budget = ["--min-pixels", str(sft.min_pixels), "--max-pixels", str(sft.max_pixels)]

    def evaluate(model: Path, stage: str) -> None:
        result = run / stage / "eval-mgpo.json"
        stages.run(
            f"eval-{stage}",
            result,
            lambda: run_mgpo(
                "eval", "--model", str(model), "--data", str(data["test"]), "--mode", "mgpo",
                "--base", str(RL_START), "--out", str(result), *budget,
            ),
        )  # fmt: skip

    evaluate(RL_START, "base")
    stages.run("train", run / "final" / "config.json", lambda: run_mgpo("train", "--config", str(config)))
    evaluate(run / "final", "final")
    return run


def demo_summary(run: Path, report: Path) -> dict[str, object]:
    """What the demo shows: training valid grounding at the start and end of RL (temperature 1), the held-out
    numbers before and after, and where to look."""
    from runtime.metrics_log import read_metrics

    valid = [s["valid_grounding_ratio"] for s in read_metrics(run, "step")]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    held_out = {
        stage: json.loads((run / stage / "eval-mgpo.json").read_text()) for stage in ("base", "final")
    }
    return {
        "steps": len(valid),
        "valid_start": mean(valid[:WINDOW]),
        "valid_end": mean(valid[-WINDOW:]),
        "held_out": {stage: {key: r.get(key) for key, _ in TABLE} for stage, r in held_out.items()},
        "curves": str(report / "curves.png"),
        "run": str(run),
    }


def _show(console: Console, summary: dict, timings: dict[str, float]) -> None:
    table = Table(title=f"held-out split, greedy: the cold start vs after {summary['steps']} RL steps")
    table.add_column("")
    for _, title in TABLE:
        table.add_column(title, justify="right")
    for stage, label in (("base", "before RL (RL start)"), ("final", "after RL")):
        row = summary["held_out"][stage]
        table.add_row(label, *(f"{row[key]:.2f}" if row[key] is not None else "-" for key, _ in TABLE))
    console.print(table)
    start, end = summary["valid_start"], summary["valid_end"]
    console.print(
        f"valid grounding in training (temperature 1): {start:.2f} over the first {WINDOW} steps -> "
        f"{end:.2f} over the last {WINDOW}"
    )
    console.print(f"curves (reward, accuracy, valid grounding per step): {summary['curves']}")
    console.print(f"run folder (metrics.jsonl, final/, checkpoints/, tensorboard/): {summary['run']}")
    console.print(
        f"rollout viewer: `mgpo serve --config {summary['serve_config']}`, then http://localhost:8000/viewer"
    )
    console.print(
        f"{sum(timings.values()):.0f} s in all: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    )


def rebuild_cold_start(out: str | Path = "out/demo-cold-start") -> list[dict[str, object]]:
    """`mgpo demo --rebuild-cold-start`: the SFT of each pinned model's config, in order, each pinned to
    models/ before the next (the RL start trains from the cold start just pinned)."""
    manifests = []
    for folder, config in PINNED:
        changes: dict = {"output_dir": str(Path(out) / folder.name)}
        base = _base(config)
        if base is not None:  # from wherever this runs (the manifest pins the base by its hash)
            changes["model"] = {"path": str(base)}
        written = write_config(config, Path(out) / folder.name / config.name, changes)
        started = time.perf_counter()
        run_mgpo("sft", "--config", str(written), "--resume")
        manifests.append(
            pin_model(load_sft_config(written).run_dir, folder, round(time.perf_counter() - started, 1))
        )
    return manifests


def _base(config: Path) -> Path | None:
    """The pinned folder a config trains from (its model.path), or None for a model built from scratch."""
    path = load_sft_config(config).model.path
    return next((folder for folder, _ in PINNED if path == str(folder.relative_to(ROOT))), None)


def pin_model(sft_run: Path, folder: Path, seconds: float | None = None) -> dict[str, object]:
    """Pin the model of an SFT run of `folder`'s config (PINNED) to `folder`."""
    config = dict(PINNED)[folder]
    summary = json.loads((sft_run / "summary.json").read_text())
    made_by = {
        "commit": current_commit(ROOT),
        "command": f"mgpo sft --config {config.relative_to(ROOT)}",
        "sft_steps": summary["steps"],
        "sft_seconds": seconds if seconds is not None else summary["seconds"],
        "held_out": {k: summary[k] for k in ("grounding_accuracy", "recognition_accuracy") if k in summary},
    }
    return pin(sft_run / "model", folder, config, made_by, base=_base(config))
