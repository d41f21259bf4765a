"""What multi-turn RL will push, per looks category: a policy's decisions as RL samples them, and their pay.

    .venv/bin/python benchmarks/looks_decision_probe.py --config RUN.yaml [--model MODEL] [--data DIR]
        [--n 8] [--engine hf] [--out benchmarks/results/looks-decision-probe.json]

Each question of the run's data (or `--data`) is rolled out `--n` times by the run's own loop and settings
(mode, temperature, top_p, max_crops, invalid_crop, direct_bonus; the learner's scale_rewards), as one RL
group, by the run's start model or `--model`. Per category and decision (direct answer, one crop, two crops, a malformed crop request, cut
off), it prints the share of samples, the share answered right, and the decision's GRPO advantage summed
over its samples per sample of the category: the push RL gives a decision's first token (it is the token
that decides: a reply starts with `\\boxed{` or with `{"bbox_2d"`). A decision with a negative push is
sampled less after the update. Why multi-turn RL drifted to direct answers on the looks set (README,
Results) is read off this table. Not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.loop import Loop, Tokenizer  # noqa: E402
from actors.rollout_actor import build_engine, engine_tokenizer, rollout_settings  # noqa: E402
from mgpo.advantages import grpo_advantages  # noqa: E402
from mgpo.data.dataset import open_store, read_prompts  # noqa: E402
from mgpo.metrics import CUT_OFF, looks  # noqa: E402
from mgpo.records import TaskKind, TrajectoryGroup, TrajectorySample  # noqa: E402
from mgpo.turns import INVALID_CROP  # noqa: E402
from runtime.config import load_config  # noqa: E402
from services.driver.prepare import actor_spec  # noqa: E402

DECISIONS = ("direct", "one crop", "two crops", "malformed crop", "cut off")


def decision(sample: TrajectorySample) -> str:
    """Which of DECISIONS a trajectory took."""
    if sample.finish_reason == INVALID_CROP:
        return "malformed crop"
    if sample.finish_reason in CUT_OFF:
        return "cut off"
    seen = looks(sample)
    if seen.direct:
        return "direct"
    return "one crop" if seen.crops <= 1 else "two crops"


def table(
    groups: dict[str, list[TrajectoryGroup]], scale_rewards: bool = True
) -> dict[str, dict[str, dict[str, float]]]:
    """{category: {decision: {share, right, push}}} over each category's groups (see the module doc), the
    advantages as the learner computes them (`scale_rewards`: learner.scale_rewards)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for category, category_groups in sorted(groups.items()):
        rows: dict[str, dict[str, float]] = defaultdict(lambda: {"samples": 0, "right": 0, "push": 0.0})
        total = 0
        for group in category_groups:
            rewards = torch.tensor([[s.reward for s in group.samples]])
            kept = torch.tensor([[s.finish_reason not in CUT_OFF for s in group.samples]])
            advantages = grpo_advantages(rewards, kept, scale=scale_rewards).advantages[0].tolist()
            for sample, advantage in zip(group.samples, advantages, strict=True):
                row = rows[decision(sample)]
                row["samples"] += 1
                row["right"] += sample.reward >= 1.0
                row["push"] += advantage
                total += 1
        out[category] = {
            name: {
                "share": round(rows[name]["samples"] / total, 3),
                "right": round(rows[name]["right"] / rows[name]["samples"], 3),
                "push": round(rows[name]["push"] / total, 3),
            }
            for name in DECISIONS
            if rows[name]["samples"]
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the multi-turn RL run's config")
    parser.add_argument("--model", help="the policy (default: the config's model.path)")
    parser.add_argument("--data", help="the questions (default: the config's data)")
    parser.add_argument("--n", type=int, default=8, help="samples per question (default 8)")
    parser.add_argument("--engine", help="hf or vllm (default: the config's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "looks-decision-probe.json"))
    args = parser.parse_args()
    config = load_config(args.config)
    model = args.model or config.model.path
    data = Path(args.data) if args.data else config.data_dir
    spec = actor_spec(config, model, "", "probe", 0, None, 0)
    spec = dataclasses.replace(
        spec, n=args.n, engine=args.engine or spec.engine, image_store=str(data / "images")
    )
    records = [r for r in read_prompts(data) if r.kind is TaskKind.MULTIPLE_CHOICE]
    engine = build_engine(spec)
    try:
        tok = Tokenizer(engine_tokenizer(engine))
        loop = Loop(engine, tok, open_store(data), rollout_settings(spec), "probe")
        groups: dict[str, list[TrajectoryGroup]] = defaultdict(list)
        for start in range(0, len(records), 8):
            batch = records[start : start + 8]
            for record, group in zip(batch, loop.rollout(batch, seed=start), strict=True):
                groups[record.category or "all"].append(group)
            print(f"probe: {start + len(batch)}/{len(records)} questions", file=sys.stderr, flush=True)
    finally:
        engine.close()
    result = table(groups, config.learner.scale_rewards)
    settings = {
        "scale_rewards": config.learner.scale_rewards,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "direct_bonus": spec.direct_bonus,
        "invalid_crop": spec.invalid_crop,
    }
    report = {"model": model, "data": str(data), "n": args.n, **settings, "categories": result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    for category, rows in result.items():
        for name, row in rows.items():
            print(
                f"{category:8s} {name:15s} share {row['share']:.2f}  right {row['right']:.2f}  push {row['push']:+.3f}"
            )


if __name__ == "__main__":
    main()
