"""The run registry in Redis: what the control plane knows about runs, and what survives its restart.

- `mgpo:runs`: the set of run names;
- `mgpo:<run>:meta`: status, run folder, config (JSON), driver pid and host, error, timestamps;
- `mgpo:<run>:actors`: rollout actor name -> membership state (joining | running | leaving), by the driver;
- plus the run state (runtime.run_state) and the streams (runtime.queue).

Status: `created` (driver starting) -> `running` -> `finished` | `stopped` | `failed`. A `running` run whose
driver has not beaten its heart for `LOST_AFTER_S` is reported `lost` (its driver died without a word), and
so is a `created` run whose driver, launched that long ago, never beat its heart at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import redis

from runtime.queue import Queue
from runtime.run_state import RunState

RUNS_KEY = "mgpo:runs"
LOST_AFTER_S = 180.0
FINAL = ("finished", "stopped", "failed")
ENDED = (*FINAL, "lost")  # no driver is running: commands are refused, resume restarts one


def meta_key(run: str) -> str:
    return f"mgpo:{run}:meta"


def actors_key(run: str) -> str:
    return f"mgpo:{run}:actors"


@dataclass
class RunView:
    name: str
    status: str
    run_dir: str
    config: dict
    driver_pid: int
    driver_host: str
    error: str
    created: float
    wait_share: float | None = None  # the learner's recent share of time waiting for groups
    state: dict[str, int] = field(default_factory=dict)
    queue: dict[str, int] = field(default_factory=dict)
    actors: dict[str, int] = field(default_factory=dict)


class Runs:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def register(self, name: str, config: dict, run_dir: str) -> bool:
        """Record a new run; False if the name is taken."""
        if not self.client.sadd(RUNS_KEY, name):
            return False
        self.client.hset(
            meta_key(name),
            mapping={
                "status": "created",
                "run_dir": run_dir,
                "config": json.dumps(config),
                "created": time.time(),
            },
        )
        return True

    def adopt(self, name: str, config: dict, run_dir: str) -> None:
        """A driver started outside the control plane (`mgpo train`) makes itself known."""
        if not self.register(name, config, run_dir):
            self.client.hset(meta_key(name), mapping={"run_dir": run_dir, "config": json.dumps(config)})

    def names(self) -> list[str]:
        return sorted(n.decode() for n in self.client.smembers(RUNS_KEY))

    def exists(self, name: str) -> bool:
        return bool(self.client.sismember(RUNS_KEY, name))

    def set(self, name: str, **fields: str | int | float) -> None:
        self.client.hset(meta_key(name), mapping=fields)

    def set_actors(self, name: str, states: dict[str, str]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(actors_key(name))
        if states:
            pipe.hset(actors_key(name), mapping=states)
        pipe.execute()

    def view(self, name: str) -> RunView | None:
        meta = {k.decode(): v.decode() for k, v in self.client.hgetall(meta_key(name)).items()}
        if not meta:
            return None
        state = RunState(self.client, name).read()
        status = meta.get("status", "created")
        if status == "running" and time.time() - state.heartbeat > LOST_AFTER_S:
            status = "lost"
        launched = float(meta.get("launched", 0.0))
        if status == "created" and launched and state.heartbeat < launched < time.time() - LOST_AFTER_S:
            status = "lost"  # a driver that never started: it hung or died before its first heartbeat
        counts = {"desired": state.desired_actors, "joining": 0, "running": 0, "leaving": 0}
        for raw in self.client.hvals(actors_key(name)):
            counts[raw.decode()] = counts.get(raw.decode(), 0) + 1
        return RunView(
            name=name,
            status=status,
            run_dir=meta.get("run_dir", ""),
            config=json.loads(meta.get("config", "{}")),
            driver_pid=int(meta.get("driver_pid", 0)),
            driver_host=meta.get("driver_host", ""),
            error=meta.get("error", ""),
            created=float(meta.get("created", 0.0)),
            wait_share=float(meta["learner_wait_share"]) if "learner_wait_share" in meta else None,
            state=state._asdict(),
            queue=Queue(self.client, name, "control").depth(),
            actors=counts,
        )

    def views(self) -> list[RunView]:
        return [v for v in (self.view(n) for n in self.names()) if v is not None]
