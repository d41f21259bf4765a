"""`mgpo rollout`: the loop over a dataset folder without Redis or Ray; also the core of evaluation."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

from actors.loop import Loop, Tokenizer
from actors.rollout_actor import ActorSpec, build_engine, engine_tokenizer, rollout_settings
from mgpo.data.dataset import open_store, read_prompts
from mgpo.metrics import summarize
from mgpo.records import TrajectoryGroup


def group_summary(group: TrajectoryGroup) -> dict[str, object]:
    """One JSON line per group: what a person reads (the token arrays stay out)."""
    return {
        "id": group.id,
        "prompt_id": group.prompt_id,
        "policy_version": group.policy_version,
        "samples": [
            {
                "reward": s.reward,
                "valid_grounding": s.valid_grounding,
                "turns": s.turns,
                "finish_reason": s.finish_reason,
                "views": [
                    {"image": v.image, "region": list(v.region) if v.region else None} for v in s.views
                ],
                "text": list(s.text),
                "sampled_tokens": s.sampled_tokens,
            }
            for s in group.samples
        ],
    }


def run_offline_rollout(
    spec: ActorSpec, data: str, out: str, batch_prompts: int, limit: int | None
) -> dict[str, object]:
    engine = build_engine(spec)
    try:
        loop = Loop(
            engine, Tokenizer(engine_tokenizer(engine)), open_store(data), rollout_settings(spec), spec.name
        )
        records = list(read_prompts(data))[:limit]
        groups: list[TrajectoryGroup] = []
        start = time.perf_counter()
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with (
            open(out, "w") as sink,
            tqdm(total=len(records), desc=f"rollout {spec.mode}", unit="prompt") as bar,
        ):
            for i in range(0, len(records), batch_prompts):
                batch = loop.rollout(records[i : i + batch_prompts], seed=spec.seed + i)
                for group in batch:
                    sink.write(json.dumps(group_summary(group)) + "\n")
                groups += batch
                bar.update(len(batch))
        seconds = time.perf_counter() - start
    finally:
        engine.close()
    summary = summarize(groups)._asdict()
    summary.update(
        seconds=round(seconds, 2), tokens_per_s=round(summary["generated_tokens"] / max(seconds, 1e-9), 1)
    )
    summary.update(mode=spec.mode, engine=spec.engine, out=out)
    return summary
