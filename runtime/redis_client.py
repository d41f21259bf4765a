"""The run's Redis client for the processes that must outlive a Redis restart (driver, learner, actors).

redis-py retries a command that failed on a lost connection, reconnecting each time; its default gives up
within a second or two, about as long as a restarted server takes to open its port, so a restart killed the
driver (its learner step's XREADGROUP raised). These settings wait about a minute, long enough for a pod to
be rescheduled and to load its AOF; past that the error is raised as before. A transaction retried after the
server ran it but before the reply came back runs twice: its appended group is a duplicate, which the
learner drops by its id (runtime/queue.py).
"""

from __future__ import annotations

import logging

import redis
from redis.backoff import EqualJitterBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

RETRIES = 40  # 1-2 s apart once the backoff reaches its cap: 50-60 s of outage ridden out
BACKOFF_CAP_S = 2.0
BACKOFF_BASE_S = 0.05


class _Backoff(EqualJitterBackoff):
    """redis-py's backoff, saying in the log that Redis is down and that the process waits (the retry itself
    has no hook)."""

    def compute(self, failures: int) -> float:
        if failures == 1 or failures % 10 == 0:
            log.warning("Redis unreachable (try %d of %d): waiting for it to come back", failures, RETRIES)
        return super().compute(failures)


def connect(url: str) -> redis.Redis:
    """A client for `url` whose commands wait out a restarting server instead of failing at once."""
    retry = Retry(_Backoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S), RETRIES)
    return redis.Redis.from_url(url, retry=retry, socket_connect_timeout=5)
