"""Commands to a running run from outside its driver (`mgpo scale`, `mgpo pause`): they set its run state,
which the driver reads between learner steps."""

from __future__ import annotations

import json
import os

import redis

from runtime.config import RunConfig
from runtime.run_state import RunState


def run_state_of(config: RunConfig) -> RunState:
    """The run state of a running run (its private Redis is found through processes.json)."""
    path = config.run_dir / "processes.json"
    if not path.exists():
        raise FileNotFoundError(f"no running run at {config.run_dir} (processes.json is missing)")
    url = (
        config.queue.redis_url
        or os.environ.get("MGPO_REDIS_URL")
        or json.loads(path.read_text())["redis_url"]
    )
    return RunState(redis.Redis.from_url(url), config.name)


def scale(config: RunConfig, actors: int) -> int:
    """Set a running run's desired actor count (its driver reconciles within one learner step)."""
    if actors < 0:
        raise ValueError(f"--actors must be >= 0, got {actors}")
    run_state_of(config).set(desired_actors=actors)
    return actors


def pause(config: RunConfig, paused: bool) -> None:
    """Stop (or restart) admission: actors finish their batch and take nothing new; the learner waits."""
    run_state_of(config).set(paused=int(paused))
