"""`mgpo report RUN_DIR...`: training curves (reward, accuracy, valid-grounding ratio per step) as PNG and CSV, and
the test-split results of each run (its eval-*.json files) as a Markdown table."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from runtime.metrics_log import read_metrics

CURVES = (
    ("reward", "reward (training rollouts)"),
    ("accuracy", "accuracy (training rollouts)"),
    ("valid_grounding_ratio", "valid-grounding ratio"),
)
COLUMNS = (
    "accuracy",
    "valid_grounding_ratio",
    "mean_iou_valid",
    "mean_iou_all",
    "crop_holds_target_ratio",
    "crop_alone_ratio",
)


def _label(run: Path) -> str:
    config = run / "config.yaml"
    if config.exists():
        raw = yaml.safe_load(config.read_text()) or {}
        return f"{raw.get('name', run.name)} ({raw.get('rollout', {}).get('mode', '?')})"
    return run.name


def smooth(values: Sequence[float], window: int = 5) -> list[float]:
    """Trailing moving average (the first points average what there is)."""
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def write_report(runs: Sequence[str], out: str) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    series = {_label(Path(r)): read_metrics(Path(r), "step") for r in runs}
    with open(folder / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "step", "accuracy", "valid_grounding_ratio", "reward"])
        for label, steps in series.items():
            for s in steps:
                writer.writerow([label, s["step"], s["accuracy"], s["valid_grounding_ratio"], s["reward"]])
    figure, axes = plt.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4))
    for axis, (key, title) in zip(axes, CURVES, strict=True):
        for label, steps in series.items():
            axis.plot([s["step"] for s in steps], smooth([s[key] for s in steps]), label=label)
        # a reward with a format term need not lie in 0-1: its axis grows to show it
        top = max((s[key] for steps in series.values() for s in steps), default=1.0)
        axis.set(title=title, xlabel="learner step", ylim=(0, max(1.0, top)))
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(folder / "curves.png", dpi=120)
    plt.close(figure)

    # One row per eval file: <run>/<model folder>/eval-<mode>.json (final/ = the RL policy, base/ = before RL).
    lines = [
        "| run | model | eval mode | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for run in runs:
        for path in sorted(Path(run).rglob("eval-*.json")):
            result = json.loads(path.read_text())
            cells = [f"{result[c]:.3f}" if c in result else "-" for c in COLUMNS]
            model = path.parent.relative_to(run).as_posix()
            lines.append(f"| {_label(Path(run))} | {model} | {result['mode']} | " + " | ".join(cells) + " |")
    (folder / "results.md").write_text("\n".join(lines) + "\n")
    return {
        "curves": str(folder / "curves.png"),
        "data": str(folder / "curves.csv"),
        "table": str(folder / "results.md"),
    }
