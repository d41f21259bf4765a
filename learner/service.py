"""The learner process: trajectory groups from Redis -> MGPO step on DeepSpeed -> weights to the actors.

`Learner` is a plain class (tested directly), one per rank; `learner.ranks.start_learner` runs its ranks as
Ray actors. The driver calls `step` in a loop, `sync` at broadcast boundaries, and `checkpoint`; the learner
never calls an actor.

Exactly-once use of groups: a group is used at most once per timeline (`_seen`, and Redis' committed set
for older checkpoints), and groups are acked in Redis only by `checkpoint`, so a learner restarted from its
latest checkpoint finds the groups used after it in its pending list and uses them again in order.
`<run_dir>/ledger.jsonl` records every group the learner received and what became of it (used at a version,
or dropped as stale / duplicate); a restore cuts it back to the checkpoint, so it describes one timeline.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
from safetensors.torch import save_file

from learner.checkpoint import export_hf, latest_checkpoint, load_checkpoint, save_checkpoint
from learner.engine import (
    EngineConfig,
    build_deepspeed,
    deepspeed_callbacks,
    enable_gradient_checkpointing,
    init_ranks,
    init_single_rank,
    make_optimizer,
)
from learner.gather import full_state, gathered, state_shapes
from learner.step import Prepared, Ranks, Reference, UpdateConfig, mgpo_step, prepare_one, with_signal
from mgpo.images import ImageStore
from mgpo.loss import LossConfig
from mgpo.metrics import summarize
from mgpo.records import TrajectoryGroup
from runtime.affinity import pin
from runtime.broadcast import Address, join, plan_buckets, send, wire_plan
from runtime.config import LoraSection
from runtime.metrics import GROUNDING_GAUGES, LOOK_GAUGES, LearnerMetrics, serve_metrics
from runtime.queue import Queue
from runtime.redis_client import connect
from runtime.redis_server import node_ip
from runtime.run_state import RunState


@dataclass(frozen=True)
class LearnerSpec:
    """What the learner needs; built by the driver from the run config."""

    model_path: str
    redis_url: str
    run: str
    image_store: str
    run_dir: str
    loss: LossConfig = field(default_factory=LossConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    weight_decay: float = 0.01
    engine: EngineConfig = field(default_factory=EngineConfig)
    lr: float = 1e-6
    groups_per_step: int = 16
    world_size: int = 1  # data-parallel ranks, each a process (a GPU on a cluster)
    lora: LoraSection | None = None  # adapters train, the base is frozen (and is the KL reference)
    cpu_affinity: tuple[int, ...] = ()  # CPU cores the rank runs on (a shared machine); empty: anywhere
    max_staleness: int = 1
    broadcast_backend: str = "auto"  # "auto": NCCL when the learner has a GPU, else gloo
    bucket_bytes: int = 64 << 20
    sync_timeout_s: float = 120.0
    keep_checkpoints: int = 2
    resume: bool = False
    seed: int = 0
    metrics_port: int | None = None  # None: no Prometheus endpoint; 0: any free port


class Learner:
    """One rank of the learner. Rank 0 (the head) alone talks to Redis, the actors and the driver's
    Prometheus; every rank holds the model and trains on its share of each step's groups, which the head
    hands out (`_share`). `step` and `checkpoint` are collective: the driver calls them on every rank."""

    def __init__(self, spec: LearnerSpec, rank: int = 0, rendezvous: tuple[str, int] | None = None) -> None:
        # transformers (3.4 s of imports) here, not at the module's top: the driver imports this module
        from mgpo.models.tiny import load_processor

        self.spec, self.rank, self.head = spec, rank, rank == 0
        if spec.cpu_affinity:
            pin(spec.cpu_affinity, "learner.cpu_affinity")
        torch.manual_seed(spec.seed)
        self._join_ranks(rendezvous)
        self._build_model()
        self.processor = load_processor(spec.model_path)
        self.store = ImageStore(spec.image_store)
        self.checkpoints = Path(spec.run_dir) / "checkpoints"
        self.version = 0
        # ZeRO-3 shards the weights: every rank takes part in gathering them (sync, snapshot, export)
        self.sharded = spec.engine.zero_stage == 3
        self.plan = plan_buckets(state_shapes(self.engine.module), spec.bucket_bytes)
        self.counters = {"used": 0, "stale": 0, "duplicate": 0, "unreadable": 0}
        self._uncommitted: list[tuple[str, str]] = []  # (message id, group id) used since the checkpoint
        self._carry: list[TrajectoryGroup] = []  # collected for a step that timed out
        self._waited = 0.0  # seconds waited by calls that timed out: part of the next step's wait
        self._ready: dict[str, Prepared] = {}  # batches built while the learner waited for more groups
        self.metrics: LearnerMetrics | None = None
        if self.head:
            self._start_head()
        elif spec.resume:
            self._restore_engine(latest_checkpoint(self.checkpoints))

    def _join_ranks(self, rendezvous: tuple[str, int] | None) -> None:
        if self.spec.world_size == 1:
            init_single_rank()
            self.ranks = Ranks()
            return
        assert rendezvous is not None, "a learner of several ranks meets at the driver's store"
        init_ranks(self.rank, self.spec.world_size, *rendezvous)
        self.ranks = Ranks(self.rank, self.spec.world_size, torch.distributed.all_reduce)

    def _build_model(self) -> None:
        """The policy under DeepSpeed (LoRA adapters only, when configured) and the KL reference."""
        from mgpo.models.tiny import load_policy

        spec = self.spec
        dtype = torch.bfloat16 if spec.engine.dtype == "bf16" else torch.float32
        model = load_policy(spec.model_path, dtype=dtype)
        if spec.update.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        if spec.lora is not None:
            from learner.lora import add_lora  # peft: 3.4 s of imports the driver (which imports this) skips

            model = add_lora(model, spec.lora)  # only the adapters train
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(trainable, spec.lr, spec.weight_decay, spec.engine)
        self.engine = build_deepspeed(model, optimizer, spec.engine)
        self.backward, self.optimizer_step = deepspeed_callbacks(self.engine)
        # the HF model mgpo_step runs (with a LoRA policy: its base, whose layers carry the adapters)
        self.policy = model.get_base_model() if spec.lora is not None else self.engine.module
        device = next(self.engine.module.parameters()).device  # DeepSpeed moved the policy to the GPU
        self.reference = None
        if spec.loss.kl_coef > 0 and spec.lora is not None:  # the base is the reference: no second copy
            self.reference = Reference(self.policy, model.disable_adapter)
        elif spec.loss.kl_coef > 0:
            frozen = load_policy(spec.model_path, dtype=dtype).to(device).eval().requires_grad_(False)
            self.reference = Reference(frozen)

    def _start_head(self) -> None:
        """Rank 0's own: the queue, the ledger, a resumed run's state, the Prometheus endpoint."""
        spec = self.spec
        self.queue = Queue(connect(spec.redis_url), spec.run, "learner")
        self.queue.ensure_groups()
        self.run_state = RunState(self.queue.client, spec.run)
        self.ledger = Path(spec.run_dir) / "ledger.jsonl"
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        self._seen: set[str] = set()
        self._backlog: list[tuple[str, TrajectoryGroup]] = []
        if spec.resume:
            self._restore(latest_checkpoint(self.checkpoints))
        self._store: torch.distributed.TCPStore | None = None
        self._group: tuple[int, object] | None = None
        self._generation = 0
        if spec.metrics_port is not None:
            from prometheus_client import CollectorRegistry

            self.metrics = LearnerMetrics(spec.run, CollectorRegistry())
            self.metrics.version.labels(spec.run).set(self.version)
            self.metrics_target = serve_metrics(
                self.metrics.registry, self.queue.client, spec.run, "learner", "learner", spec.metrics_port
            )

    # ---- training -------------------------------------------------------------------------------------

    def step(self, timeout_s: float = 60.0, partial: bool = False) -> dict[str, float] | None:
        """Collect `groups_per_step` fresh groups and take one optimizer step; None if they did not arrive
        within `timeout_s` (what was collected waits for the next call). `partial`: step on what there is
        (the end of the data)."""
        start = time.perf_counter()
        groups = self._collect(timeout_s) if self.head else []
        waited = self._waited + time.perf_counter() - start
        ready = len(groups) >= self.spec.groups_per_step or (partial and bool(groups))
        self._carry = [] if ready else groups
        if self.spec.world_size > 1:
            groups = self._share(groups if ready else None)
        elif not ready:
            groups = None
        if groups is None:
            self._waited = waited
            return None
        self._waited = 0.0
        staleness = [self.version - g.policy_version for g in groups]
        started = time.perf_counter()
        result = mgpo_step(
            self.policy,
            self.reference,
            groups,
            self.processor,
            self.store,
            self.spec.loss,
            self.spec.update,
            self.backward,
            self.optimizer_step,
            self.ranks,
            self._ready,
        )
        self._ready = {}  # every group collected was used: nothing is carried past a step
        self.version += 1
        if self.head:
            self.counters["used"] += len(groups)
            self._record(used=[g.id for g in groups], staleness=staleness)
        summary = summarize(groups)
        stats = {
            "version": self.version,
            **{k: float(v) for k, v in result._asdict().items()},
            "accuracy": summary.accuracy,
            "valid_grounding_ratio": summary.valid_grounding_ratio,
            "valid_grounding_lenient_ratio": summary.valid_grounding_lenient_ratio,
            # looking closer; then multi-image grounding batches only (None: nothing to count)
            **{k: float(v) for k in LOOK_GAUGES + GROUNDING_GAUGES if (v := getattr(summary, k)) is not None},
            "turns": summary.turns,
            "samples": float(summary.samples),
            "generated_tokens": float(summary.generated_tokens),
            "staleness_mean": sum(staleness) / len(staleness),
            "staleness_max": float(max(staleness)),
            "wait_seconds": waited,
            "step_seconds": time.perf_counter() - started,
            **{f"groups_{k}": float(v) for k, v in self.counters.items()},
        }
        if self.metrics is not None:
            self.metrics.observe_step(stats, groups, staleness)
            self.metrics.count_groups("used", len(groups))
        return stats

    def _share(self, groups: list[TrajectoryGroup] | None) -> list[TrajectoryGroup] | None:
        """The head's groups for this step (None: no step) on every rank. The other ranks wait here while
        the head collects; records are small (ids, logprobs, views), images stay in the shared store."""
        box = [groups]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def _collect(self, timeout_s: float) -> list[TrajectoryGroup]:
        fresh = list(self._carry)
        deadline = time.monotonic() + timeout_s
        while len(fresh) < self.spec.groups_per_step:
            room = self.spec.groups_per_step - len(fresh)
            if self._backlog:
                taken, self._backlog = self._backlog[:room], self._backlog[room:]
            else:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    break
                taken = self.queue.take_groups(room, block_ms=min(1000, left_ms))
            dropped: dict[str, list[str]] = {"stale": [], "duplicate": []}
            for message_id, group in taken:
                self._uncommitted.append((message_id, group.id))
                if group.id in self._seen or self.queue.is_committed(group):
                    dropped["duplicate"].append(group.id)  # a redelivered prompt's twin
                elif self.version - group.policy_version > self.spec.max_staleness:
                    dropped["stale"].append(group.id)
                else:
                    fresh.append(group)
                    self._build_early(group)
                self._seen.add(group.id)
            for kind, ids in dropped.items():
                self.counters[kind] += len(ids)
                if self.metrics is not None:
                    self.metrics.count_groups(kind, len(ids))
            if dropped["stale"] or dropped["duplicate"]:
                self._record(**dropped)
            returned = len(dropped["stale"]) + len(dropped["duplicate"])
            if self.queue.dropped > self.counters["unreadable"]:
                returned += self.queue.dropped - self.counters["unreadable"]
                if self.metrics is not None:
                    self.metrics.count_groups("unreadable", self.queue.dropped - self.counters["unreadable"])
                self.counters["unreadable"] = self.queue.dropped
            if returned:
                self.run_state.add("returned", returned)  # admission control lets that many more in
        return fresh

    def _build_early(self, group: TrajectoryGroup) -> None:
        """Build a group's batch while waiting for the rest of the step's groups (the processor's pixels and
        the expanded tokens: ~40% of a step on the tiny model), instead of in the step. One rank only: with
        several, each builds its own share inside the step."""
        if self.spec.world_size > 1:
            return
        signal, _ = with_signal([group], self.spec.loss.scale_rewards)
        if signal:
            weight = self.spec.loss.decision_weight
            self._ready[group.id] = prepare_one(signal[0], self.processor, self.store, weight)

    def _record(self, **entry: list) -> None:
        with self.ledger.open("a") as f:
            f.write(json.dumps({"version": self.version, **entry}) + "\n")

    # ---- weights to actors ----------------------------------------------------------------------------

    def address(self, world_size: int) -> list:
        """A new broadcast generation for `world_size` members (rank 0 is this learner)."""
        if self._store is None:
            self._store = torch.distributed.TCPStore(
                node_ip(),
                0,
                is_master=True,
                wait_for_workers=False,
                timeout=timedelta(seconds=self.spec.sync_timeout_s),
            )
        self._generation += 1
        return list(
            Address(
                node_ip(),
                self._store.port,
                world_size,
                self._generation,
                self._backend(),
                self.spec.sync_timeout_s,
            )
        )

    def _backend(self) -> str:
        if self.spec.broadcast_backend != "auto":
            return self.spec.broadcast_backend
        return "nccl" if next(self.engine.module.parameters()).is_cuda else "gloo"

    def wire_plan(self) -> list:
        return wire_plan(self.plan)

    def sync(self, address: list) -> dict[str, float] | None:
        """Send the current weights to this generation's members (joining it first if it is new), bucket by
        bucket. Under ZeRO-3 every rank calls it to gather each bucket; the head alone sends."""
        if not self.head and not self.sharded:
            return None
        address = Address(*address)
        start = time.perf_counter()
        if self.head and (self._group is None or self._group[0] != address.generation):
            self._group = (address.generation, join(address, 0, self._store))
        joined = time.perf_counter()
        device = next(self.engine.module.parameters()).device
        sent, error = 0, None
        for bucket in self.plan:
            with gathered(self.engine.module, [slot.name for slot in bucket.slots]) as part:
                if self.head and error is None:
                    try:
                        sent += send(part, [bucket], self._group[1], device=device)  # type: ignore[index]
                    except Exception as err:  # noqa: BLE001  (kept gathering: the other ranks are in step)
                        error = err
        if error is not None:
            self._group = None  # a broken generation is never reused
            raise error
        if not self.head:
            return None
        seconds = time.perf_counter() - joined
        stats = {
            "version": self.version,
            "sync_bytes": float(sent),
            "sync_seconds": seconds,
            "sync_join_seconds": joined - start,
            "sync_bytes_per_second": sent / max(seconds, 1e-9),
        }
        if self.metrics is not None:
            self.metrics.observe_sync(stats)
        return stats

    def _full_state(self) -> dict[str, torch.Tensor]:
        """The whole weights on the head's CPU ({} elsewhere); collective under ZeRO-3."""
        return full_state(self.engine.module, self.plan, keep=self.head)

    def snapshot(self) -> tuple[str, int] | None:
        """The current weights as a file (for an actor joining mid-run); returns (path, version)."""
        if not self.head and not self.sharded:
            return None
        state = self._full_state()
        if not self.head:
            return None
        folder = Path(self.spec.run_dir) / "snapshots"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"weights-v{self.version:06d}.safetensors"
        save_file(state, str(path))
        for old in folder.glob("weights-v*.safetensors"):
            if old != path:
                old.unlink(missing_ok=True)
        return str(path), self.version

    # ---- checkpoints ----------------------------------------------------------------------------------

    def checkpoint(self) -> str | None:
        """Save, then ack in Redis the groups it holds (a crash in between re-acks them on resume).
        Collective: every rank writes its optimizer shard; the head returns the folder."""
        used = list(self._uncommitted)
        meta = {
            "counters": dict(self.counters),
            "committed": used,
            "carry": [g.id for g in self._carry],
            "ledger_lines": _count_lines(self.ledger) if self.head else 0,
            "layout": self._layout(),
        }
        policy = self._full_state() if self.head or self.sharded else {}
        folder = save_checkpoint(
            self.engine, self.checkpoints, self.version, meta, policy, self.spec.keep_checkpoints, self.rank
        )
        if not self.head:
            return None
        self._commit(used)
        if self.metrics is not None:
            self.metrics.checkpoints.labels(self.spec.run).inc()
        return str(folder)

    def _commit(self, used: list[tuple[str, str]]) -> None:
        carried = {g.id for g in self._carry}  # collected for the next step: not used yet, stay pending
        done = [(m, g) for m, g in used if g not in carried]
        self.queue.commit_groups([m for m, _ in done], [g for _, g in done])
        self._uncommitted = [(m, g) for m, g in self._uncommitted if g in carried]

    def _restore_engine(self, folder: Path | None) -> dict:
        """Every rank: the engine's state and the version at `folder` (None: start from the model)."""
        if folder is None:
            return {}
        meta = load_checkpoint(self.engine, folder, self._layout())
        self.version = int(meta["version"])
        return meta

    def _layout(self) -> dict[str, object]:
        """What a checkpoint's DeepSpeed state depends on, recorded with it and checked on resume."""
        spec = self.spec
        return {
            "world_size": spec.world_size,
            "zero_stage": spec.engine.zero_stage,
            "lora": spec.lora is not None,
        }

    def _restore(self, folder: Path | None) -> None:
        """The head: continue from `folder` (None: no checkpoint yet, start from the model) and the Redis
        streams."""
        meta = self._restore_engine(folder)
        if folder is not None:
            self.counters.update(meta["counters"])
            self._commit([tuple(x) for x in meta["committed"]])  # idempotent if they were acked already
        lines = self.ledger.read_text().splitlines(keepends=True) if self.ledger.exists() else []
        self.ledger.write_text("".join(lines[: meta["ledger_lines"] if folder is not None else 0]))
        self._backlog = self.queue.pending_groups()
        returned = self.counters["stale"] + self.counters["duplicate"] + self.counters["unreadable"]
        depth = self.queue.depth()
        # what was admitted and not used yet is exactly what is in flight: in the trajectory stream, or
        # taken by an actor (pending prompts)
        admitted = self.counters["used"] + returned + depth["trajectories_len"] + depth["prompts_pending"]
        self.run_state.set(returned=returned, admitted=admitted)

    def export(self, out: str) -> str | None:
        """An HF-format folder of the current policy (the head's; every rank calls it under ZeRO-3)."""
        if not self.head and not self.sharded:
            return None
        state = self._full_state()
        return str(export_hf(self.policy, state, self.spec.model_path, out)) if self.head else None

    def info(self) -> dict[str, object]:
        return {
            "version": self.version,
            "counters": dict(self.counters),
            "uncommitted": len(self._uncommitted),
            "pid": os.getpid(),
        }


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0
