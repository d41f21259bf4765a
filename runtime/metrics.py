"""Prometheus metrics: what each process exports, and how Prometheus finds them.

Every process exports its own numbers on its own endpoint (no shared files, so it works across pods):
- rollout actors (`RolloutMetrics`) and the learner (`LearnerMetrics`) serve `/metrics` on a port of their own
  and register `host:port` in Redis (`mgpo:<run>:targets`);
- the control plane serves run-level gauges read from Redis at scrape time (`RunsCollector`) and lists every
  registered endpoint at `/metrics/targets` in Prometheus' HTTP service-discovery format.
Counters are per process; sum them in PromQL (`sum by (run) (rate(...))`). The one label every series has is
`run` (bounded by the runs you start); others are small fixed sets (outcome, state, stream).

The headline, the valid-grounding ratio, comes three ways: `mgpo_rollout_grounding_total{outcome}` counters
(ratio of rates in PromQL, any window), `mgpo_valid_grounding_ratio` (the learner's last step batch) and
`mgpo_valid_grounding_ratio_recent` (the learner's last `RECENT` trajectories).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mgpo.records import TrajectoryGroup
from runtime.redis_server import node_ip

RECENT = 256  # trajectories in the learner's rolling valid-grounding window
ACTOR_STATES = ("starting", "idle", "rolling_out", "loading_weights", "admission_wait", "stopped")
GROUP_OUTCOMES = ("used", "stale", "duplicate", "unreadable")
LEARNER_GAUGES = ("loss", "kl", "entropy", "clip_fraction", "grad_norm", "is_weight", "reward", "accuracy")
# set only by steps that trained on multi-image grounding samples
GROUNDING_GAUGES = ("mean_iou", "iou_accuracy", "right_image_ratio")
# how the last step's trajectories looked closer (mgpo.metrics.Looks); the ratios are unset until a step has
# a crop request / a crop to count
LOOK_GAUGES = ("crops", "direct_answer_ratio", "valid_crop_ratio", "crop_of_crop_ratio")


def targets_key(run: str) -> str:
    return f"mgpo:{run}:targets"


class RolloutMetrics:
    """One rollout actor's counters; `observe` is called once per batch (cost measured in the README)."""

    def __init__(self, run: str, registry: CollectorRegistry) -> None:
        r, labels = registry, ["run"]
        self.run, self.registry = run, registry
        self.groups = Counter("mgpo_rollout_groups_total", "Trajectory groups produced", labels, registry=r)
        self.trajectories = Counter(
            "mgpo_rollout_trajectories_total", "Trajectories (samples) produced", labels, registry=r
        )
        self.grounding = Counter(
            "mgpo_rollout_grounding_total",
            "Trajectories by grounding outcome: valid = every box parsed and passed the validity check",
            ["run", "outcome"],
            registry=r,
        )
        self.correct = Counter(
            "mgpo_rollout_correct_total", "Trajectories that earned the full reward", labels, registry=r
        )
        self.reward = Histogram(
            "mgpo_rollout_reward",
            "Reward per trajectory",
            labels,
            buckets=(0.0, 0.25, 0.5, 0.75, 1.0),
            registry=r,
        )
        self.turns = Histogram(
            "mgpo_rollout_turns", "Turns per trajectory", labels, buckets=(1, 2, 3, 4, 6, 8), registry=r
        )
        self.crop_area = Histogram(
            "mgpo_rollout_crop_area_ratio",
            "Crop area over the original image's area, per crop",
            labels,
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=r,
        )
        self.tokens = Counter(
            "mgpo_rollout_generated_tokens_total", "Tokens sampled by the policy", labels, registry=r
        )
        self.batch_seconds = Histogram(
            "mgpo_rollout_batch_seconds",
            "Wall time of one rollout batch (all turns of all its prompts)",
            labels,
            buckets=(0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320),
            registry=r,
        )
        self.version = Gauge(
            "mgpo_rollout_policy_version", "Policy version this actor generates with", labels, registry=r
        )
        self.state = Gauge(
            "mgpo_rollout_actor_state", "1 for this actor's state", ["run", "state"], registry=r
        )
        self.admission_waits = Counter(
            "mgpo_rollout_admission_waits_total",
            "Polls that found the actors too far ahead of the learner",
            labels,
            registry=r,
        )
        self.redis_errors = Counter(
            "mgpo_rollout_redis_errors_total", "Redis unreachable; the actor waited", labels, registry=r
        )
        self.failed_prompts = Counter(
            "mgpo_rollout_prompts_failed_total",
            "Prompts whose rollout raised (retried, then dead-lettered after max_deliveries)",
            labels,
            registry=r,
        )
        self.set_state("starting")

    def set_state(self, state: str) -> None:
        for s in ACTOR_STATES:
            self.state.labels(self.run, s).set(1.0 if s == state else 0.0)

    def observe(
        self, groups: Sequence[TrajectoryGroup], seconds: float, areas: Iterable[float], version: int
    ) -> None:
        run = self.run
        samples = [s for g in groups for s in g.samples]
        self.groups.labels(run).inc(len(groups))
        self.trajectories.labels(run).inc(len(samples))
        valid = sum(s.valid_grounding for s in samples)
        self.grounding.labels(run, "valid").inc(valid)
        self.grounding.labels(run, "invalid").inc(len(samples) - valid)
        self.correct.labels(run).inc(sum(s.reward >= 1.0 for s in samples))
        self.tokens.labels(run).inc(sum(s.sampled_tokens for s in samples))
        for s in samples:
            self.reward.labels(run).observe(s.reward)
            self.turns.labels(run).observe(s.turns)
        for area in areas:
            self.crop_area.labels(run).observe(area)
        self.batch_seconds.labels(run).observe(seconds)
        self.version.labels(run).set(version)


class LearnerMetrics:
    def __init__(self, run: str, registry: CollectorRegistry) -> None:
        r, labels = registry, ["run"]
        self.run, self.registry = run, registry
        self.version = Gauge("mgpo_policy_version", "The learner's policy version", labels, registry=r)
        self.steps = Counter("mgpo_learner_steps_total", "Optimizer steps taken", labels, registry=r)
        self.step_seconds = Histogram(
            "mgpo_learner_step_seconds",
            "Wall time of one optimizer step (logprobs, loss, backward, update)",
            labels,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.wait_seconds = Histogram(
            "mgpo_learner_wait_seconds",
            "Time a step waited for trajectory groups (the learner starving)",
            labels,
            buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.groups = Counter(
            "mgpo_learner_groups_total",
            "Trajectory groups received, by what became of them",
            ["run", "outcome"],
            registry=r,
        )
        self.trajectories = Counter(
            "mgpo_learner_trajectories_total", "Trajectories trained on", labels, registry=r
        )
        self.staleness = Histogram(
            "mgpo_learner_staleness",
            "Policy versions between a used group's behaviour policy and the learner",
            labels,
            buckets=(0, 1, 2, 3, 4, 8, 16),
            registry=r,
        )
        self.gauges = {
            name: Gauge(f"mgpo_learner_{name}", f"Last step's {name.replace('_', ' ')}", labels, registry=r)
            for name in LEARNER_GAUGES + LOOK_GAUGES + GROUNDING_GAUGES
        }
        self.valid_ratio = Gauge(
            "mgpo_valid_grounding_ratio",
            "Share of the last step's trajectories whose grounding was valid",
            labels,
            registry=r,
        )
        self.valid_ratio_lenient = Gauge(
            "mgpo_valid_grounding_lenient_ratio",
            "The same, the boxes read by the lenient rule (rollout.box_rule's other choice)",
            labels,
            registry=r,
        )
        self.valid_ratio_recent = Gauge(
            "mgpo_valid_grounding_ratio_recent",
            f"Share of the learner's last {RECENT} trajectories whose grounding was valid",
            labels,
            registry=r,
        )
        self.sync_seconds = Histogram(
            "mgpo_weight_sync_seconds",
            "Weight broadcast time, learner side (joining the group excluded)",
            labels,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.sync_bytes = Counter("mgpo_weight_sync_bytes_total", "Bytes broadcast", labels, registry=r)
        self.last_sync = Gauge(
            "mgpo_weight_sync_last_timestamp_seconds", "Unix time of the last broadcast", labels, registry=r
        )
        self.checkpoints = Counter("mgpo_learner_checkpoints_total", "Checkpoints saved", labels, registry=r)
        self._recent: deque[bool] = deque(maxlen=RECENT)

    def observe_step(
        self, stats: dict[str, float], groups: Sequence[TrajectoryGroup], staleness: list[int]
    ) -> None:
        run = self.run
        self.version.labels(run).set(stats["version"])
        self.steps.labels(run).inc()
        self.step_seconds.labels(run).observe(stats["step_seconds"])
        self.wait_seconds.labels(run).observe(stats["wait_seconds"])
        samples = [s for g in groups for s in g.samples]
        self.trajectories.labels(run).inc(len(samples))
        for value in staleness:
            self.staleness.labels(run).observe(value)
        for name, gauge in self.gauges.items():
            if name in stats:
                gauge.labels(run).set(stats[name])
        self.valid_ratio.labels(run).set(stats["valid_grounding_ratio"])
        self.valid_ratio_lenient.labels(run).set(stats["valid_grounding_lenient_ratio"])
        self._recent.extend(s.valid_grounding for s in samples)
        self.valid_ratio_recent.labels(run).set(sum(self._recent) / max(1, len(self._recent)))

    def count_groups(self, outcome: str, n: int) -> None:
        if n:
            self.groups.labels(self.run, outcome).inc(n)

    def observe_sync(self, stats: dict[str, float]) -> None:
        self.sync_seconds.labels(self.run).observe(stats["sync_seconds"])
        self.sync_bytes.labels(self.run).inc(stats["sync_bytes"])
        self.last_sync.labels(self.run).set(time.time())


def serve_metrics(
    registry: CollectorRegistry, client: redis.Redis, run: str, member: str, role: str, port: int = 0
) -> str:
    """Serve `registry` on `port` (0: any free one; taken: the next free one) and register it for discovery.

    Returns "host:port". A fixed port lets a Kubernetes PodMonitor scrape it; discovery covers the rest.
    """
    for candidate in [port] if port == 0 else range(port, port + 16):
        try:
            server, _ = start_http_server(candidate, addr="0.0.0.0", registry=registry)
            break
        except OSError:
            continue
    else:
        raise OSError(f"no free metrics port in {port}..{port + 15}")
    target = f"{node_ip()}:{server.server_port}"
    entry = {"target": target, "role": role, "member": member, "pid": os.getpid()}
    client.hset(targets_key(run), member, json.dumps(entry))
    return target


def unregister(client: redis.Redis, run: str, members: Iterable[str]) -> None:
    names = list(members)
    if names:
        client.hdel(targets_key(run), *names)


def discovery(client: redis.Redis, runs: Iterable[str]) -> list[dict[str, object]]:
    """Prometheus HTTP service discovery: one target group per registered process."""
    groups = []
    for run in runs:
        for raw in client.hvals(targets_key(run)):
            entry = json.loads(raw)
            labels = {"run": run, "role": entry["role"], "member": entry["member"]}
            groups.append({"targets": [entry["target"]], "labels": labels})
    return groups


class RunsCollector(Collector):
    """Run-level gauges read from Redis when Prometheus scrapes the control plane."""

    def __init__(self, describe_runs: object) -> None:
        self.describe_runs = describe_runs  # () -> list of services.runs.RunView

    def collect(self) -> Iterable[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "mgpo_run_info", "1 per known run, labelled with its status", labels=["run", "status"]
        )
        depth = GaugeMetricFamily("mgpo_queue_depth", "Entries in a stream", labels=["run", "stream"])
        pending = GaugeMetricFamily(
            "mgpo_queue_pending", "Entries delivered and not acked (in flight)", labels=["run", "stream"]
        )
        actors = GaugeMetricFamily(
            "mgpo_actors", "Rollout actors by membership state", labels=["run", "state"]
        )
        paused = GaugeMetricFamily("mgpo_run_paused", "1 while admission is paused", labels=["run"])
        version = GaugeMetricFamily(
            "mgpo_run_policy_version", "Version the actors were last synced to", labels=["run"]
        )
        for run in self.describe_runs():  # type: ignore[operator]
            info.add_metric([run.name, run.status], 1.0)
            for stream in ("prompts", "trajectories"):
                depth.add_metric([run.name, stream], run.queue.get(f"{stream}_len", 0))
                pending.add_metric([run.name, stream], run.queue.get(f"{stream}_pending", 0))
            depth.add_metric(
                [run.name, "dead"], run.queue.get("dead_len", 0)
            )  # dead letters (poison prompts)
            for state, count in run.actors.items():
                actors.add_metric([run.name, state], count)
            paused.add_metric([run.name], run.state.get("paused", 0))
            version.add_metric([run.name], run.state.get("version", 0))
        yield from (info, depth, pending, actors, paused, version)


def exported_names() -> set[str]:
    """Every sample name the processes export (what dashboards and alert rules may reference)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count"),
    }
    registry = CollectorRegistry()
    RolloutMetrics("x", registry)
    LearnerMetrics("x", registry)
    registry.register(RunsCollector(lambda: []))
    return {
        family.name + suffix for family in registry.collect() for suffix in suffixes.get(family.type, ("",))
    }
