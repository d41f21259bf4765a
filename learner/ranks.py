"""The learner's ranks as Ray actors in one placement group (a GPU each on a cluster, a process each on a CPU).

Rank 0, the head, is the handle for everything that is not collective (weight sync, snapshots, export,
info); `call` runs a collective method (`step`, `checkpoint`) on every rank together. A rank that dies fails
the call at once: the others may be waiting for it inside a collective, so every rank is killed and the
driver restarts the learner from its latest checkpoint, as it does for a single rank.
"""

from __future__ import annotations

from learner.service import Learner, LearnerSpec
from runtime.redis_server import node_ip


class LearnerRanks:
    def __init__(self, ranks: list, placement: object, rendezvous: object | None) -> None:
        self.ranks, self.placement = ranks, placement
        self._rendezvous = rendezvous  # the ranks' TCPStore: it lives as long as they do
        self.head = ranks[0]

    def call(self, method: str, *args: object, **kwargs: object) -> object:
        """`method` on every rank at once; the head's result."""
        import ray

        refs = [getattr(rank, method).remote(*args, **kwargs) for rank in self.ranks]
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayError as err:
                # several ranks: the others may wait in a collective for the failed one. One rank that died:
                # its placement group would stay reserved (a restarted learner asks for a new one)
                if len(self.ranks) > 1 or isinstance(err, ray.exceptions.RayActorError):
                    self.kill()
                raise
        return ray.get(refs[0])

    def kill(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for rank in self.ranks:
            ray.kill(rank, no_restart=True)
        remove_placement_group(self.placement)


def start_learner(
    spec: LearnerSpec,
    incarnation: int = 0,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    resources: dict[str, float] | None = None,
) -> LearnerRanks:
    """`spec.world_size` ranks, each asking for `num_cpus`, `num_gpus` and `resources`, packed on as few nodes
    as possible (NCCL within a node is fastest). Each restart is a new `incarnation` (Ray frees a dead actor's
    name late)."""
    import ray
    import torch.distributed as dist
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    bundle = {k: v for k, v in {"CPU": num_cpus, "GPU": num_gpus, **(resources or {})}.items() if v > 0}
    placement = placement_group([bundle] * spec.world_size, strategy="PACK")
    rendezvous, address = None, None
    if spec.world_size > 1:
        rendezvous = dist.TCPStore(node_ip(), 0, spec.world_size + 1, is_master=True, wait_for_workers=False)
        address = (node_ip(), rendezvous.port)
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources or {}, max_concurrency=1)(
        Learner
    )
    ranks = [
        remote.options(
            name=f"{spec.run}-learner-{incarnation}" + (f"-rank-{rank}" if rank else ""),
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement, placement_group_bundle_index=rank
            ),
        ).remote(spec, rank, address)
        for rank in range(spec.world_size)
    ]
    return LearnerRanks(ranks, placement, rendezvous)
