"""The weight sync: every `sync_every` learner steps the learner broadcasts its weights to every member
(runtime.broadcast; gloo on CPU, NCCL on GPU).

A broadcast group is one *generation*: the learner (rank 0) and the members at its start, in name order, each
member holding `tensor_parallel` ranks (one per vLLM worker: member i's are 1 + i*tp .. (i+1)*tp). Membership changes form a new generation at the next sync. A member that fails a sync is left
out of the next generation and the survivors are tried once more at once, so one dead actor never stops the
others from getting the weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from runtime.run_state import RunState
from services.driver.membership import Membership
from services.driver.messages import shown

if TYPE_CHECKING:
    from learner.ranks import LearnerRanks


def member_ranks(names: tuple[str, ...], tensor_parallel: int) -> tuple[dict[str, int], int]:
    """Each member's first rank in the broadcast group, and the group's size (the learner is rank 0)."""
    first = {name: 1 + i * tensor_parallel for i, name in enumerate(names)}
    return first, 1 + len(names) * tensor_parallel


class WeightSync:
    def __init__(
        self,
        membership: Membership,
        run_state: RunState,
        timeout_s: float,
        console: Console,
        tensor_parallel: int = 1,
    ) -> None:
        self.membership, self.run_state, self.timeout_s = membership, run_state, timeout_s
        self.tensor_parallel = tensor_parallel
        self.console = console
        self.address: list | None = None  # the current generation's rendezvous
        self.members: tuple[str, ...] = ()  # ... and who is in it
        self.plan: object = None  # the learner's wire plan (bucket layout), fetched once per learner start
        self.synced = -1  # the version the members last received (-1: none yet)

    def new_learner(self, learner: LearnerRanks) -> None:
        """A (re)started learner: its wire plan, and a new generation at the next sync."""
        import ray

        self.plan = ray.get(learner.head.wire_plan.remote())
        self.address, self.synced = None, -1

    def __call__(self, learner: LearnerRanks) -> dict[str, float] | None:
        """Broadcast to every member; returns the learner's sync stats, or None if nobody got the weights."""
        for _attempt in range(2):
            stats = self._once(learner)
            if stats is not None:
                return stats
            self.membership.reconcile(learner)
        return None

    def _once(self, learner: LearnerRanks) -> dict[str, float] | None:
        import ray

        members = self.membership.members
        names = tuple(sorted(members))
        if not names:
            return None
        first, world_size = member_ranks(names, self.tensor_parallel)
        if self.address is None or self.members != names:
            self.address = ray.get(learner.head.address.remote(world_size))
            self.members = names
        version = ray.get(learner.head.info.remote())["version"]
        # every rank: under ZeRO-3 the others gather each bucket with the head (at once otherwise)
        sender, *gatherers = [rank.sync.remote(self.address) for rank in learner.ranks]
        receivers = {
            n: members[n].receive_weights.remote(self.address, first[n], self.plan, version)  # type: ignore[attr-defined]
            for n in names
        }
        waited = [sender, *gatherers, *receivers.values()]
        ray.wait(waited, num_returns=len(waited), timeout=self.timeout_s + 30)
        failed = []
        for name, ref in receivers.items():
            try:
                ray.get(ref, timeout=0)
            except (ray.exceptions.RayError, TimeoutError) as err:
                failed.append(name)
                self.console.print(f"[yellow]sync to {name} failed[/]: {shown(err)}")
        try:
            stats = ray.get(sender, timeout=0)
            ray.get(gatherers, timeout=0)
        except (ray.exceptions.RayError, TimeoutError) as err:
            self.console.print(f"[yellow]broadcast failed[/]: {shown(err)}")
            stats = None
        if failed or stats is None:
            self.address = None  # the next try forms a new generation without the failed members
            return None
        self.run_state.set(version=version)
        self.synced = version
        return stats
