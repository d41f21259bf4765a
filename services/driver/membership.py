"""Actor membership: the rollout actors of a run, reconciled towards `desired_actors` between learner steps.

An actor is `joining` while its constructor runs (it loads the learner's current weights from a snapshot
before it takes any prompt; its `run`, called with it, starts as the constructor returns), then a member (`running`; it joins the broadcast group at the next sync), then
`leaving` once asked to stop (it finishes its batch, so its prompts are acked rather than reclaimed). A
member whose `run` call returned has died: it is dropped, and the reconcile adds a replacement; its
unacknowledged prompts are reclaimed by the others (runtime.queue)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from actors.rollout_actor import ActorSpec, start_rollout_actor
from runtime.metrics import unregister
from runtime.queue import Queue
from runtime.run_state import RunState
from services.driver.messages import shown
from services.runs import Runs

if TYPE_CHECKING:
    from learner.ranks import LearnerRanks

# (actor name, actors started before it, weights snapshot or None, policy version) -> the actor's spec
SpecFor = Callable[[str, int, str | None, int], ActorSpec]


class Membership:
    def __init__(
        self,
        run: str,
        run_dir: Path,
        spec_for: SpecFor,
        placement: tuple[float, dict[str, float]],
        state: tuple[RunState, Runs, Queue],
        console: Console,
    ) -> None:
        self.run, self.run_dir, self.spec_for = run, run_dir, spec_for
        self.gpus, self.resources = placement
        self.run_state, self.registry, self.queue = state
        self.console = console
        self.members: dict[str, object] = {}  # name -> handle, running and in the broadcast set
        self.joining: dict[str, tuple[object, object]] = {}  # name -> (handle, constructor-done ref)
        self.leaving: dict[str, object] = {}
        self.runs: dict[str, object] = {}  # name -> ref of its `run` call (ready = it stopped or died)
        self.pids: dict[str, int] = {}  # the learner's too, for processes.json
        self.init_seconds: dict[str, float] = {}  # each admitted actor's own start-up (its engine's)
        self.redis_url: str | None = None  # shown in processes.json: a private server's URL only
        self.started = 0

    def add(self, learner: LearnerRanks | None) -> None:
        """Start one actor with the learner's weights (None: a fresh run's, the model folder's: version 0)."""
        import ray

        version = 0 if learner is None else ray.get(learner.head.info.remote())["version"]
        weights = learner.call("snapshot")[0] if learner is not None and version > 0 else None  # type: ignore[index]
        name = f"{self.run}-actor-{self.started}"
        handle = start_rollout_actor(
            self.spec_for(name, self.started, weights, version), num_gpus=self.gpus, resources=self.resources
        )
        self.started += 1
        self.joining[name] = (handle, handle.health.remote())
        # `run` now: Ray starts it the moment the constructor returns. Called at admission instead, it waited
        # for the driver's next look around, after a learner wait of up to step_timeout_s (on 2 cores ~6 s
        # of a 23 s first step, the actor ready and idle).
        self.runs[name] = handle.run.remote()  # type: ignore[attr-defined]
        self.console.print(f"actor {name} starting (weights v{version})")

    def remove(self, name: str) -> None:
        handle = self.members.pop(name)
        handle.stop.remote()  # type: ignore[attr-defined]  # finishes its batch: its prompts are acked
        self.leaving[name] = handle
        self.console.print(f"actor {name} leaving")

    def reconcile(self, learner: LearnerRanks | None) -> None:
        """Bring the actors towards `desired_actors`: admit constructed ones, bury dead ones, add, remove
        (`learner` None: before the learner is up, in a fresh run)."""
        self._admit()
        self._bury()
        self._release(timeout_s=0)
        desired = self.run_state.read().desired_actors
        while len(self.members) + len(self.joining) < desired:
            self.add(learner)
        while len(self.members) > desired:
            self.remove(sorted(self.members)[-1])
        self.write()

    def _admit(self) -> None:
        import ray

        for name, (handle, ready) in list(self.joining.items()):
            done, _ = ray.wait([ready], timeout=0)
            if not done:
                continue
            del self.joining[name]
            try:
                health = ray.get(ready)
                self.pids[name], self.init_seconds[name] = health["pid"], health["init_seconds"]
            except ray.exceptions.RayError as err:
                self.console.print(f"[red]actor {name} failed to start[/]: {shown(err)}")
                self.runs.pop(name, None)
                close_actor(handle)
                continue
            self.members[name] = handle
            self.console.print(f"actor {name} running; joins the broadcast group at the next sync")

    def _bury(self) -> None:
        import ray

        for name in list(self.members):
            done, _ = ray.wait([self.runs[name]], timeout=0)
            if done:
                handle = self.members.pop(name)
                self.pids.pop(name, None)
                unregister(self.queue.client, self.run, [name])
                self.console.print(f"[yellow]actor {name} died[/]; its prompts are reclaimed by the others")
                close_actor(handle)  # a `run` that raised leaves a live process and its vLLM workers

    def _release(self, timeout_s: float) -> None:
        """Close the leaving actors whose `run` returned (waiting up to `timeout_s` for each)."""
        import ray

        for name, handle in list(self.leaving.items()):
            done, _ = ray.wait([self.runs[name]], timeout=timeout_s)
            if done:
                del self.leaving[name]
                self.pids.pop(name, None)
                close_actor(handle)

    def write(self) -> None:
        states = {n: "running" for n in self.members}
        states.update({n: "joining" for n in self.joining})
        states.update({n: "leaving" for n in self.leaving})
        self.registry.set_actors(self.run, states)
        processes = {"redis_url": self.redis_url, "pids": self.pids, "members": sorted(self.members)}
        (self.run_dir / "processes.json").write_text(json.dumps(processes))

    def close_all(self, timeout_s: float = 120.0) -> None:
        """Ask every member to stop, give them `timeout_s` to finish their batch, then close everything."""
        self._admit()  # a constructed actor is already running: it gets the members' orderly stop
        for name in list(self.members):
            self.remove(name)
        deadline = time.monotonic() + timeout_s
        while self.leaving and time.monotonic() < deadline:
            self._release(timeout_s=1)
        for handle, _ in self.joining.values():
            close_actor(handle)
        for handle in self.leaving.values():
            close_actor(handle)


def close_actor(handle: object) -> None:
    """Shut the engine down (vLLM leaves worker processes behind otherwise), then the actor."""
    import ray

    try:
        ray.get(handle.close.remote(), timeout=60)  # type: ignore[attr-defined]
    except (ray.exceptions.RayError, TimeoutError):
        pass
    ray.kill(handle)
