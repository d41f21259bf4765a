import itertools
import os
import time

import pytest
import redis

from actors.rollout_actor import ActorSpec, RolloutWorker, start_rollout_actor
from mgpo.data.dataset import open_store, read_prompts
from runtime.queue import Queue, group_id

pytestmark = pytest.mark.slow
_runs = itertools.count()


def _spec(box_model, synth_data, redis_server, run, name, engine="hf", **kw):
    base = dict(n=2, max_turn_tokens=24, batch_prompts=2, claim_idle_ms=1500, temperature=1.0)
    base.update(kw)
    return ActorSpec(
        name=name,
        model_path=str(box_model),
        engine=engine,
        redis_url=redis_server.url,
        run=run,
        image_store=str(open_store(synth_data).root),
        **base,
    )


def _queue(redis_server, run):
    q = Queue(redis.Redis.from_url(redis_server.url), run, "driver")
    q.ensure_groups()
    return q


def _records(synth_data, k):
    records = list(read_prompts(synth_data))
    return [records[i % len(records)] for i in range(k)]


def test_worker_pulls_rolls_out_pushes_and_acks(box_model, synth_data, redis_server):
    run = f"w{next(_runs)}"
    q = _queue(redis_server, run)
    ids = q.put_prompts(_records(synth_data, 3))
    worker = RolloutWorker(_spec(box_model, synth_data, redis_server, run, "w0"))
    stats = worker.run(max_prompts=3)
    assert stats["prompts"] == 3 and stats["samples"] == 6 and stats["generated_tokens"] > 0
    groups = q.take_groups(10, block_ms=100)
    assert sorted(g.id for _, g in groups) == sorted(group_id(i) for i in ids)
    assert all(g.actor == "w0" and len(g.samples) == 2 for _, g in groups)
    assert q.depth()["prompts_len"] == 0
    health = worker.health()
    assert (
        0 < health.pop("init_seconds") < 600
    )  # the engine's start-up: the run's start-up breakdown shows it
    assert health == {"name": "w0", "state": "idle", "policy_version": 0, "pid": os.getpid()}


def test_a_poison_prompt_fails_alone_and_ends_in_the_dead_letters_while_the_batch_goes_on(
    box_model, synth_data, redis_server
):
    import dataclasses

    from mgpo.records import TaskKind

    run = f"p{next(_runs)}"
    q = _queue(redis_server, run)
    good = _records(synth_data, 2)
    # a counting answer int() refuses: the loop raises on it (the API and loaders now refuse it at the door)
    poison = dataclasses.replace(good[0], id="poison", kind=TaskKind.COUNTING, answer="²", choices=())
    ids = q.put_prompts([good[0], poison, good[1]])
    worker = RolloutWorker(
        _spec(
            box_model,
            synth_data,
            redis_server,
            run,
            "w0",
            batch_prompts=3,
            claim_idle_ms=200,
            max_deliveries=2,
        )
    )
    deadline = time.monotonic() + 120
    while q.depth()["dead_len"] == 0 and time.monotonic() < deadline:
        worker.step(block_ms=100)
        time.sleep(0.1)
    groups = q.take_groups(10, block_ms=100)
    assert sorted(g.id for _, g in groups) == sorted(group_id(i) for i in (ids[0], ids[2]))
    (letter,) = q.dead_letters()
    assert letter["message_id"] == ids[1]
    assert letter["reason"].startswith(
        "delivered 2 times without completing: ValueError: invalid literal for int()"
    )
    assert worker.stats()["failed_prompts"] == 2
    depth = q.depth()
    assert (depth["prompts_len"], depth["prompts_pending"]) == (0, 0)


def test_two_ray_actors_share_a_queue_and_each_prompt_is_done_once(
    box_model, synth_data, redis_server, ray_local
):
    run = f"r{next(_runs)}"
    q = _queue(redis_server, run)
    ids = q.put_prompts(_records(synth_data, 8))
    # no one dies here: an idle timeout far above a batch's time, so nothing is reclaimed while in flight;
    # duplicates would still be harmless, and are dropped as the learner drops them
    specs = [
        _spec(box_model, synth_data, redis_server, run, f"{run}-a{i}", claim_idle_ms=60_000) for i in range(2)
    ]
    actors = [start_rollout_actor(spec) for spec in specs]
    runs = [a.run.remote() for a in actors]
    deadline = time.monotonic() + 300
    groups = []
    while len(groups) < 8 and time.monotonic() < deadline:
        groups += [(m, g) for m, g in q.take_groups(8, block_ms=500) if g.id not in {x.id for _, x in groups}]
        health = ray_local.get([a.health.remote() for a in actors])  # answered while `run` pulls
        assert all(h["state"] in ("idle", "rolling_out") for h in health)
    for a in actors:
        a.stop.remote()
    stats = ray_local.get(runs)
    assert sorted(g.id for _, g in groups) == sorted(group_id(i) for i in ids)
    assert sum(s["prompts"] for s in stats) == 8 and all(s["prompts"] > 0 for s in stats)
    for a in actors:
        ray_local.kill(a)


def test_an_actor_killed_mid_batch_loses_no_prompt(box_model, synth_data, redis_server, ray_local):
    run = f"k{next(_runs)}"
    q = _queue(redis_server, run)
    ids = q.put_prompts(_records(synth_data, 4))
    doomed = start_rollout_actor(
        _spec(box_model, synth_data, redis_server, run, f"{run}-doomed", max_turn_tokens=96, batch_prompts=4)
    )
    doomed.run.remote()
    deadline = time.monotonic() + 120
    while ray_local.get(doomed.health.remote())["state"] != "rolling_out" and time.monotonic() < deadline:
        time.sleep(0.05)
    ray_local.kill(doomed)  # dies holding 4 unacked prompts
    assert q.depth()["prompts_pending"] == 4
    survivor = start_rollout_actor(_spec(box_model, synth_data, redis_server, run, f"{run}-survivor"))
    stats = ray_local.get(survivor.run.remote(max_prompts=4), timeout=300)
    assert stats["prompts"] == 4
    groups = q.take_groups(10, block_ms=200)
    assert sorted(g.id for _, g in groups) == sorted(group_id(i) for i in ids)
    assert {g.actor for _, g in groups} == {f"{run}-survivor"}
    ray_local.kill(survivor)


def test_a_vllm_rollout_actor_runs_in_ray_and_swaps_weights(
    box_model, synth_data, redis_server, ray_local, tmp_path
):
    pytest.importorskip("vllm")
    from mgpo.models.tiny import load_policy
    from mgpo.models.weights import save_weights

    run = f"v{next(_runs)}"
    q = _queue(redis_server, run)
    q.put_prompts(_records(synth_data, 2))
    actor = start_rollout_actor(_spec(box_model, synth_data, redis_server, run, f"{run}-vllm", engine="vllm"))
    stats = ray_local.get(actor.run.remote(max_prompts=2), timeout=600)
    assert stats["prompts"] == 2 and stats["policy_version"] == 0
    weights = save_weights(load_policy(box_model), tmp_path / "w.safetensors")
    assert ray_local.get(actor.load_weights.remote(str(weights), 3)) == 3
    q.put_prompts(_records(synth_data, 1))
    ray_local.get(actor.run.remote(max_prompts=1), timeout=300)
    versions = [g.policy_version for _, g in q.take_groups(10, block_ms=200)]
    assert sorted(versions) == [0, 0, 3]
    ray_local.get(actor.close.remote())
    ray_local.kill(actor)
