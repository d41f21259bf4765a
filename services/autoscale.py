"""How many rollout actors a run wants: a pure policy over what the run reports, and the loop that applies it.

Signals (per run, between learner steps):
- `wait_share`: the share of the learner's recent time spent waiting for trajectory groups (the driver keeps
  an exponential average in the run registry): high = the learner starves, actors are the bottleneck;
- `prompts_waiting`: prompts in the stream no actor has taken: 0 = the data is the bottleneck, not actors;
- `groups_waiting`: trajectory groups the learner has not taken: a surplus = actors outrun the learner (and
  their groups will go stale).

Policy: one actor up when the learner starves and prompts wait; one down when the learner has a surplus and
does not wait; never outside [min_actors, max_actors]; no change within `cooldown_s` of the last one (a new
actor needs minutes to load and a pod even longer, so reacting faster only oscillates). On a cluster, the
desired count becomes Ray actor demand and Ray's autoscaler turns demand into rollout pods.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from runtime.config import AutoscaleConfig, parse_config
from runtime.run_state import RunState


class Signal(NamedTuple):
    desired: int  # the current desired count
    wait_share: float | None  # None: no step measured yet
    prompts_waiting: int
    groups_waiting: int
    groups_per_step: int


def decide(signal: Signal, config: AutoscaleConfig, seconds_since_change: float) -> tuple[int, str]:
    """The desired actor count and why (one line, for the log and the API)."""
    low, high = config.min_actors, config.max_actors
    clamped = min(max(signal.desired, low), high)
    if clamped != signal.desired:
        return clamped, f"desired {signal.desired} outside [{low}, {high}]"
    if signal.wait_share is None:
        return signal.desired, "no learner step measured yet"
    if seconds_since_change < config.cooldown_s:
        return signal.desired, f"cooling down ({seconds_since_change:.0f}s of {config.cooldown_s:.0f}s)"
    if signal.wait_share > config.starving_above:
        if signal.prompts_waiting == 0:
            return signal.desired, "learner starving but no prompt waits: more actors would not help"
        if signal.desired >= high:
            return signal.desired, f"learner starving, already at max_actors {high}"
        return signal.desired + 1, f"learner waits {signal.wait_share:.0%} of its time and prompts wait"
    surplus = signal.groups_waiting >= config.surplus_groups * signal.groups_per_step
    if signal.wait_share < config.surplus_below and surplus and signal.desired > low:
        return signal.desired - 1, f"{signal.groups_waiting} groups wait for a learner that never waits"
    return signal.desired, "balanced"


def wait_share_average(previous: float | None, wait_s: float, step_s: float, weight: float = 0.3) -> float:
    """Exponential average of the learner's wait share, updated after each step."""
    share = wait_s / (wait_s + step_s) if wait_s + step_s > 0 else 0.0
    return share if previous is None else (1 - weight) * previous + weight * share


class Autoscaler:
    """Applies `decide` to every running run with autoscaling enabled, every `interval_s` (a daemon thread)."""

    def __init__(self, runs: object, interval_s: float = 15.0) -> None:
        self.runs, self.interval_s = runs, interval_s
        self.decisions: dict[str, tuple[int, str]] = {}
        self._last_change: dict[str, float] = {}
        self._stop = threading.Event()

    def tick(self, now: float) -> None:
        for view in self.runs.views():  # type: ignore[attr-defined]
            config = parse_config(view.config, f"run {view.name}")
            if view.status != "running" or not config.autoscale.enabled:
                continue
            signal = Signal(
                desired=view.state["desired_actors"],
                wait_share=view.wait_share,
                prompts_waiting=view.queue["prompts_len"] - view.queue["prompts_pending"],
                groups_waiting=view.queue["trajectories_len"] - view.queue["trajectories_pending"],
                groups_per_step=config.learner.groups_per_step,
            )
            since = now - self._last_change.get(view.name, view.created)
            desired, reason = decide(signal, config.autoscale, since)
            self.decisions[view.name] = (desired, reason)
            if desired != signal.desired:
                RunState(self.runs.client, view.name).set(desired_actors=desired)  # type: ignore[attr-defined]
                self._last_change[view.name] = now

    def start(self) -> Autoscaler:
        import time

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                try:
                    self.tick(time.time())
                except Exception as err:  # a bad tick must not kill the loop; the next one retries
                    self.decisions["_error"] = (0, repr(err)[:300])

        threading.Thread(target=loop, name="autoscaler", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
