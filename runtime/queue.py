"""The run's queue on Redis Streams: prompts -> rollout actors -> trajectories -> learner.

Delivery is at-least-once and nothing is lost:
- a consumer acks a prompt only in the same MULTI/EXEC that adds its trajectory groups, so the output is in
  the next stream before the input leaves the pending list (and with AOF, on disk within a second);
- a dead consumer's pending prompts are reclaimed (XAUTOCLAIM) by a live one after `claim_idle_ms`;
- a group's id is derived from the prompt's stream message id, so a second delivery of the same message
  yields a group with the same id, and the learner drops it (`is_committed`, a Redis set);
- the learner acks groups only when a checkpoint holds their effect (`commit_groups`), so a learner killed
  between checkpoints finds the groups it used since then in its pending list (`pending_groups`) again;
- a prompt that keeps failing (its rollout raises, or kills the actor that holds it) is moved to the run's
  dead-letter stream `mgpo:<run>:dead` with its reason once it has been delivered `max_deliveries` times,
  instead of being redelivered forever (a poison prompt never stops a run);
- streams are bounded: producers wait while a stream holds `max_len` entries (back-pressure), and consumed
  entries are deleted, so memory holds only what is unread or in flight.
Works with Redis 6.2+ and Valkey (XAUTOCLAIM answers with 2 elements on 6.2, 3 on >= 7).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import redis

from mgpo.records import PromptRecord, RecordError, TrajectoryGroup

PROMPT_FIELD = b"prompt"
GROUP_FIELD = b"group"
DEAD_MAX_LEN = 10_000  # dead letters kept (approximately): the newest, for people to read


# SADD the record id; only when it is new, XADD the record and count it in `enqueued`, atomically
_ADD_IF_NEW = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', 'prompt', ARGV[2])
redis.call('HINCRBY', KEYS[3], 'enqueued', 1)
return id
"""


class QueueFull(TimeoutError):
    """A producer waited `timeout_s` and the stream stayed full (consumers are not keeping up)."""


class Message(NamedTuple):
    id: str  # the stream message id; acks and idempotency keys use it
    payload: bytes


@dataclass(frozen=True)
class StreamNames:
    run: str

    @property
    def prompts(self) -> str:
        return f"mgpo:{self.run}:prompts"

    @property
    def trajectories(self) -> str:
        return f"mgpo:{self.run}:trajectories"

    @property
    def committed(self) -> str:
        return f"mgpo:{self.run}:committed_groups"

    @property
    def state(self) -> str:
        return f"mgpo:{self.run}:state"

    @property
    def enqueued_ids(self) -> str:
        """Set: the ids of records enqueued over the API, so that a retried request adds none twice."""
        return f"mgpo:{self.run}:enqueued_ids"

    @property
    def dead(self) -> str:
        return f"mgpo:{self.run}:dead"

    @property
    def failures(self) -> str:
        """Hash: prompt message id -> why its last rollout failed (kept until it completes or dies)."""
        return f"mgpo:{self.run}:failures"


ACTORS_GROUP = "actors"
LEARNER_GROUP = "learner"


def group_id(message_id: str, sample_group: int = 0) -> str:
    """The id of the trajectory group made from prompt message `message_id`: the same on a redelivery."""
    return f"{message_id}/{sample_group}"


class Queue:
    """One client's view of a run's two streams."""

    def __init__(
        self,
        client: redis.Redis,
        run: str,
        consumer: str,
        max_len: int = 10_000,
        claim_idle_ms: int = 60_000,
        max_deliveries: int = 3,
    ) -> None:
        self.client, self.names, self.consumer = client, StreamNames(run), consumer
        self.max_len, self.claim_idle_ms, self.max_deliveries = max_len, claim_idle_ms, max_deliveries
        self.dropped = 0  # unreadable payloads removed from the streams

    def ensure_groups(self) -> None:
        """Create both consumer groups (and streams); harmless if they exist."""
        for stream, group in ((self.names.prompts, ACTORS_GROUP), (self.names.trajectories, LEARNER_GROUP)):
            try:
                self.client.xgroup_create(stream, group, id="0", mkstream=True)
            except redis.ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise

    def _wait_for_room(self, stream: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.client.xlen(stream) >= self.max_len:
            if time.monotonic() > deadline:
                raise QueueFull(f"{stream} held {self.max_len} entries for {timeout_s}s")
            time.sleep(0.05)

    def put_prompts(
        self, records: Sequence[PromptRecord], timeout_s: float = 60.0, counter: str = "fed"
    ) -> list[str]:
        """Append prompt records, waiting while the stream is full; returns their message ids.

        Each append also counts one in the run state's `counter` field, in the same transaction: `fed` for
        the feeder, so a restarted feeder continues where the stream really is; `enqueued` for the API.
        """
        ids = []
        for record in records:
            self._wait_for_room(self.names.prompts, timeout_s)
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.names.prompts, {PROMPT_FIELD: record.to_json()})
            pipe.hincrby(self.names.state, counter, 1)
            ids.append(self._decode(pipe.execute()[0]))
        return ids

    def put_new_prompts(self, records: Sequence[PromptRecord], timeout_s: float) -> tuple[list[str], int]:
        """All or nothing, and idempotent: wait up to `timeout_s` for room for every record (else QueueFull,
        nothing added), then add those whose id was never enqueued before (a retry of a request that failed
        half-way adds only the rest). Returns the new message ids and the number skipped as duplicates."""
        deadline = time.monotonic() + timeout_s
        while self.client.xlen(self.names.prompts) + len(records) > self.max_len:
            if time.monotonic() > deadline:
                free = max(0, self.max_len - self.client.xlen(self.names.prompts))
                raise QueueFull(f"room for {free} of {len(records)} prompts; nothing was added")
            time.sleep(0.05)
        add = self.client.register_script(_ADD_IF_NEW)
        keys = [self.names.enqueued_ids, self.names.prompts, self.names.state]
        ids = []
        for record in records:
            message_id = add(keys=keys, args=[record.id, record.to_json()])
            if message_id is not None:
                ids.append(self._decode(message_id))
        return ids, len(records) - len(ids)

    def take_prompts(self, count: int, block_ms: int = 1000) -> list[tuple[str, PromptRecord]]:
        """Up to `count` prompts for this consumer: reclaimed stale ones first, then new ones."""
        taken = self.reclaim_prompts(count)
        if len(taken) < count:
            taken += self.read_prompts(count - len(taken), block_ms)
        return taken

    def reclaim_prompts(self, count: int) -> list[tuple[str, PromptRecord]]:
        """Prompts a dead (or very slow, or failing) consumer left pending for longer than `claim_idle_ms`;
        those already delivered `max_deliveries` times go to the dead-letter stream instead."""
        messages = self._reclaim(self.names.prompts, ACTORS_GROUP, count)
        return self._prompts(self._bury_overdelivered(messages))

    def fail_prompt(self, message_id: str, reason: str) -> None:
        """A rollout of this prompt raised: leave it pending (it is retried after `claim_idle_ms`, by any
        actor) and remember why, for its dead letter if it never succeeds."""
        self.client.hset(self.names.failures, message_id, reason[:2000])

    def _bury_overdelivered(self, messages: list[Message]) -> list[Message]:
        if not messages:
            return messages
        pipe = self.client.pipeline(transaction=False)
        for message in messages:
            pipe.xpending_range(self.names.prompts, ACTORS_GROUP, message.id, message.id, 1)
        deliveries = [entry[0]["times_delivered"] if entry else 0 for entry in pipe.execute()]
        alive = []
        for message, times in zip(messages, deliveries, strict=True):
            if times > self.max_deliveries:
                self.dead_letter(message, times)
            else:
                alive.append(message)
        return alive

    def dead_letter(self, message: Message, deliveries: int) -> None:
        """Move a prompt to the dead-letter stream with its reason, atomically with its ack; its admission
        slot is given back (`dead` in the run state), since no group will ever come of it."""
        reason = self.client.hget(self.names.failures, message.id)
        why = reason.decode(errors="replace") if reason else "the actor holding it died each time"
        pipe = self.client.pipeline(transaction=True)
        entry = {
            PROMPT_FIELD: message.payload,
            b"message_id": message.id,
            b"reason": f"delivered {deliveries - 1} times without completing: {why}",
            b"at": str(time.time()),
        }
        pipe.xadd(self.names.dead, entry, maxlen=DEAD_MAX_LEN, approximate=True)
        pipe.xack(self.names.prompts, ACTORS_GROUP, message.id)
        pipe.xdel(self.names.prompts, message.id)
        pipe.hdel(self.names.failures, message.id)
        pipe.hincrby(self.names.state, "dead", 1)
        pipe.execute()

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The newest dead letters: message id, reason, time and the prompt record's JSON."""
        out = []
        for _, fields in self.client.xrevrange(self.names.dead, count=count):
            out.append({k.decode(): v.decode(errors="replace") for k, v in fields.items()})
        return out

    def read_prompts(self, count: int, block_ms: int = 1000) -> list[tuple[str, PromptRecord]]:
        """New prompts, never delivered before."""
        return self._prompts(self._read(self.names.prompts, ACTORS_GROUP, count, block_ms))

    def _prompts(self, messages: list[Message]) -> list[tuple[str, PromptRecord]]:
        """A payload that is not a prompt record can never be processed: it is acked, deleted and counted in
        `self.dropped`, rather than redelivered forever."""
        out = []
        for message in messages:
            try:
                out.append((message.id, PromptRecord.from_json(message.payload.decode())))
            except (RecordError, UnicodeDecodeError):
                self.dropped += 1
                self._drop(self.names.prompts, ACTORS_GROUP, [message.id])
        return out

    def complete_prompts(self, prompt_ids: Sequence[str], groups: Sequence[TrajectoryGroup]) -> list[str]:
        """Add the trajectory groups and ack + delete the prompts they came from, atomically."""
        self._wait_for_room(self.names.trajectories, timeout_s=3600.0)
        pipe = self.client.pipeline(transaction=True)
        for group in groups:
            pipe.xadd(self.names.trajectories, {GROUP_FIELD: group.to_bytes()})
        if prompt_ids:
            pipe.xack(self.names.prompts, ACTORS_GROUP, *prompt_ids)
            pipe.xdel(self.names.prompts, *prompt_ids)
            pipe.hdel(self.names.failures, *prompt_ids)
        results = pipe.execute()
        return [self._decode(r) for r in results[: len(groups)]]

    def take_groups(self, count: int, block_ms: int = 1000) -> list[tuple[str, TrajectoryGroup]]:
        """Up to `count` new trajectory groups for the learner; they stay pending until `commit_groups`.

        No reclaiming here: the single learner's pending groups are its own, used but not yet checkpointed.
        """
        return self._groups(self._read(self.names.trajectories, LEARNER_GROUP, count, block_ms))

    def pending_groups(self, count: int = 1 << 20) -> list[tuple[str, TrajectoryGroup]]:
        """This consumer's delivered-but-uncommitted groups, oldest first (a restarted learner's backlog)."""
        reply = self.client.xreadgroup(
            LEARNER_GROUP, self.consumer, {self.names.trajectories: "0"}, count=count
        )
        messages = [self._message(m) for _, entries in (reply or []) for m in entries if m[1]]
        return self._groups(messages)

    def _groups(self, messages: list[Message]) -> list[tuple[str, TrajectoryGroup]]:
        out = []
        for message in messages:
            try:
                out.append((message.id, TrajectoryGroup.from_bytes(message.payload)))
            except RecordError:
                self.dropped += 1
                self._drop(self.names.trajectories, LEARNER_GROUP, [message.id])
        return out

    def is_committed(self, group: TrajectoryGroup) -> bool:
        """True when a group with this id was already used and checkpointed: a redelivered prompt's twin."""
        return bool(self.client.sismember(self.names.committed, group.id))

    def commit_groups(self, message_ids: Sequence[str], group_ids: Sequence[str]) -> None:
        """Ack and delete used groups and remember their ids, atomically (after a checkpoint holds them)."""
        pipe = self.client.pipeline(transaction=True)
        if message_ids:
            pipe.xack(self.names.trajectories, LEARNER_GROUP, *message_ids)
            pipe.xdel(self.names.trajectories, *message_ids)
        if group_ids:
            pipe.sadd(self.names.committed, *group_ids)
        pipe.execute()

    def ack_groups(self, message_ids: Sequence[str]) -> None:
        if message_ids:
            self._drop(self.names.trajectories, LEARNER_GROUP, message_ids)

    def depth(self) -> dict[str, int]:
        """Entries and pending (delivered, not acked) per stream."""
        out = {}
        for name, stream, group in (
            ("prompts", self.names.prompts, ACTORS_GROUP),
            ("trajectories", self.names.trajectories, LEARNER_GROUP),
        ):
            out[f"{name}_len"] = int(self.client.xlen(stream))
            try:
                out[f"{name}_pending"] = int(self.client.xpending(stream, group)["pending"])
            except redis.ResponseError:
                out[f"{name}_pending"] = 0
        out["dead_len"] = int(self.client.xlen(self.names.dead))
        return out

    def _drop(self, stream: str, group: str, ids: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(stream, group, *ids)
        pipe.xdel(stream, *ids)
        pipe.execute()

    def _read(self, stream: str, group: str, count: int, block_ms: int) -> list[Message]:
        reply = self.client.xreadgroup(group, self.consumer, {stream: ">"}, count=count, block=block_ms)
        return [self._message(m) for _, entries in (reply or []) for m in entries]

    def _reclaim(self, stream: str, group: str, count: int) -> list[Message]:
        reply = self.client.xautoclaim(stream, group, self.consumer, self.claim_idle_ms, "0-0", count=count)
        # [next_id, entries] on Redis 6.2, [next_id, entries, deleted_ids] on >= 7; entries deleted while
        # pending come back with no fields
        return [self._message(m) for m in reply[1] if m[1]]

    def _message(self, entry: tuple[bytes, dict[bytes, bytes]]) -> Message:
        message_id, fields = entry
        payload = fields.get(PROMPT_FIELD) or fields.get(GROUP_FIELD) or b""
        return Message(self._decode(message_id), payload)

    @staticmethod
    def _decode(value: bytes | str) -> str:
        return value.decode() if isinstance(value, bytes) else value
