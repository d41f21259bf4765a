"""The autoscaling policy: actors follow learner starvation and queue depth, within bounds, with a cooldown."""

import time

import pytest
import redis
from pydantic import ValidationError

from mgpo.records import PromptRecord, TaskKind
from runtime.config import RunConfig
from runtime.queue import Queue
from runtime.run_state import RunState
from services.autoscale import AutoscaleConfig, Autoscaler, Signal, decide, wait_share_average
from services.runs import Runs

CONFIG = AutoscaleConfig(enabled=True, min_actors=1, max_actors=4, cooldown_s=60)


def _signal(desired=2, wait=0.3, prompts=10, groups=0, per_step=4):
    return Signal(desired, wait, prompts, groups, per_step)


@pytest.mark.parametrize(
    ("signal", "expected", "why"),
    [
        (_signal(wait=0.8), 3, "learner waits 80%"),
        (_signal(wait=0.8, prompts=0), 2, "no prompt waits"),
        (_signal(desired=4, wait=0.9), 4, "already at max_actors 4"),
        (_signal(wait=0.05, groups=8), 1, "8 groups wait"),
        (_signal(wait=0.05, groups=7), 2, "balanced"),  # under 2 steps' worth: no surplus
        (_signal(desired=1, wait=0.0, groups=100), 1, "balanced"),  # never below min_actors
        (_signal(wait=0.3, groups=100), 2, "balanced"),  # the learner waits a bit: keep the actors
        (_signal(desired=9), 4, "outside [1, 4]"),
        (_signal(desired=0), 1, "outside [1, 4]"),
        (_signal(wait=None), 2, "no learner step measured"),
    ],
)
def test_decide(signal, expected, why):
    desired, reason = decide(signal, CONFIG, seconds_since_change=600)
    assert desired == expected and why in reason


def test_no_change_during_the_cooldown_but_bounds_apply_at_once():
    assert decide(_signal(wait=0.9), CONFIG, seconds_since_change=30) == (2, "cooling down (30s of 60s)")
    assert decide(_signal(desired=7), CONFIG, seconds_since_change=0)[0] == 4


def test_config_rejects_contradictions():
    with pytest.raises(ValidationError, match="min_actors 3 > max_actors 2"):
        AutoscaleConfig(min_actors=3, max_actors=2)
    with pytest.raises(ValidationError, match="surplus_below 0.5 must be under starving_above 0.5"):
        AutoscaleConfig(surplus_below=0.5, starving_above=0.5)


def test_wait_share_is_an_exponential_average():
    assert wait_share_average(None, 3.0, 1.0) == 0.75
    assert wait_share_average(0.75, 0.0, 1.0) == pytest.approx(0.525)
    assert wait_share_average(None, 0.0, 0.0) == 0.0


def test_the_loop_raises_a_starving_runs_actors_and_leaves_others(redis_server, tmp_path):
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    runs = Runs(client)
    for name, enabled in (("auto", True), ("manual", False)):
        config = RunConfig(
            name=name, output_dir=str(tmp_path), autoscale={"enabled": enabled, "cooldown_s": 0}
        )
        runs.register(name, config.model_dump(mode="json"), str(config.run_dir))
        runs.set(name, status="running", learner_wait_share=0.9)
        RunState(client, name).set(heartbeat=int(time.time()), desired_actors=1)
        queue = Queue(client, name, "feeder")
        queue.ensure_groups()
        queue.put_prompts([PromptRecord("p", TaskKind.MULTIPLE_CHOICE, "q", ("h",), "A", ("x", "y"))])
    autoscaler = Autoscaler(runs)
    autoscaler.tick(time.time())
    assert RunState(client, "auto").read().desired_actors == 2
    assert "learner waits 90%" in autoscaler.decisions["auto"][1]
    assert RunState(client, "manual").read().desired_actors == 1 and "manual" not in autoscaler.decisions
