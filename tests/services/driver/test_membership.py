"""Actor membership with a real rollout actor in local Ray and a private Redis: an actor works as soon as it is
constructed, before the driver admits it (the driver looks around only between learner waits)."""

import itertools
import time

import pytest
import redis
from rich.console import Console

from actors.rollout_actor import ActorSpec
from mgpo.data.dataset import open_store, read_prompts
from runtime.queue import Queue
from runtime.run_state import RunState
from services.driver.membership import Membership
from services.runs import Runs

pytestmark = pytest.mark.slow
_runs = itertools.count()


def test_an_actor_rolls_out_before_the_driver_admits_it(
    box_model, synth_data, redis_server, ray_local, tmp_path
):
    run = f"m{next(_runs)}"
    client = redis.Redis.from_url(redis_server.url)
    queue = Queue(client, run, "driver")
    queue.ensure_groups()
    RunState(client, run).set(desired_actors=1)

    def spec_for(name: str, index: int, weights: str | None, version: int) -> ActorSpec:
        store = str(open_store(synth_data).root)
        return ActorSpec(name, str(box_model), "hf", redis_server.url, run, store, n=2, max_turn_tokens=16)

    state = (RunState(client, run), Runs(client), queue)
    members = Membership(run, tmp_path, spec_for, (0.0, {}), state, Console(quiet=True))
    members.add(None)
    queue.put_prompts(list(read_prompts(synth_data))[:2])
    groups, deadline = [], time.monotonic() + 300
    while len(groups) < 2 and time.monotonic() < deadline:
        groups += queue.take_groups(2, block_ms=500)
    # no reconcile was called: still joining as the driver sees it, and its groups are in
    assert len(groups) == 2 and list(members.joining) == [f"{run}-actor-0"] and not members.members
    members.close_all(timeout_s=60)  # admits it first, so it stops after its batch
    assert not members.joining and not members.members and not members.leaving
