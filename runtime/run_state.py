"""Run-wide numbers in one Redis hash, shared by the driver, the learner and every actor.

The hash `mgpo:<run>:state` holds:
- `version`: the policy version the actors were last synced to (published after each broadcast);
- `groups_per_step`, `max_staleness`: what admission control needs, written by the driver (unset: no
  admission control, as in a standalone rollout);
- `admitted`: prompts actors have taken to roll out (new reads only; a reclaimed prompt was admitted once);
- `returned`: groups the learner received but did not use (stale, duplicate, unreadable);
- `dead`: prompts moved to the dead-letter stream (runtime.queue): admitted, but no group will come of them;
- `fed`: prompts the feeder has appended (kept by runtime.queue in the same transaction as the append);
- `desired_actors`: how many rollout actors the run should have (the driver reconciles towards it);
- `paused`: 1 stops admission: actors finish what they hold and take nothing new, the learner waits;
- `enqueued`: prompts added over the control plane (not the feeder's: `fed` stays its resume position);
- `stop`, `checkpoint_requested`: 1 asks the driver to checkpoint and stop / to checkpoint now;
- `heartbeat`: the driver's last sign of life (unix seconds).

Admission control (as in AReaL): actors may have taken at most
    (version + max_staleness + 1) * groups_per_step + returned + dead
prompts in all. The learner uses groups_per_step groups per version, so nothing admitted under this bound
can be more than max_staleness versions old when it is used; `max_staleness: 0` makes the run synchronous.
"""

from __future__ import annotations

from typing import NamedTuple

import redis

FIELDS = (
    "version",
    "groups_per_step",
    "max_staleness",
    "admitted",
    "returned",
    "dead",
    "fed",
    "desired_actors",
    "paused",
    "enqueued",
    "stop",
    "checkpoint_requested",
    "heartbeat",
)


class Snapshot(NamedTuple):
    version: int
    groups_per_step: int
    max_staleness: int
    admitted: int
    returned: int
    dead: int
    fed: int
    desired_actors: int
    paused: int
    enqueued: int
    stop: int
    checkpoint_requested: int
    heartbeat: int

    @property
    def budget(self) -> int:
        if self.groups_per_step == 0:  # not configured: a standalone rollout, no learner to keep up with
            return 1 << 62
        return (self.version + self.max_staleness + 1) * self.groups_per_step + self.returned + self.dead


class RunState:
    def __init__(self, client: redis.Redis, run: str) -> None:
        self.client, self.key = client, f"mgpo:{run}:state"

    def read(self) -> Snapshot:
        values = self.client.hmget(self.key, FIELDS)
        return Snapshot(*(int(v) if v is not None else 0 for v in values))

    def set(self, **fields: int) -> None:
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise KeyError(f"unknown run state fields {sorted(unknown)}; known: {FIELDS}")
        self.client.hset(self.key, mapping={k: int(v) for k, v in fields.items()})

    def add(self, field: str, amount: int) -> int:
        if field not in FIELDS:
            raise KeyError(f"unknown run state field {field!r}; known: {FIELDS}")
        return int(self.client.hincrby(self.key, field, amount))

    def reserve(self, want: int) -> int:
        """Admit up to `want` prompts; returns how many (0: the actors are too far ahead of the learner)."""
        state = self.read()
        if state.paused:
            return 0
        room = min(want, state.budget - state.admitted)
        if room <= 0:
            return 0
        over = self.add("admitted", room) - state.budget  # another actor reserved at the same moment
        if over > 0:
            give_back = min(over, room)
            self.add("admitted", -give_back)
            room -= give_back
        return room

    def release(self, unused: int) -> None:
        """Return admitted slots that found no prompt to read."""
        if unused > 0:
            self.add("admitted", -unused)
