"""The rollout actor: one engine, pulling prompts from Redis, pushing scored trajectory groups.

`RolloutWorker` is a plain class (tested directly); `start_rollout_actor` wraps it as a threaded Ray actor so
`health`, `stats` and `load_weights` are answered while `run` pulls. The engine lock makes a weight swap
happen between two batches, never inside one.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass

import redis

from actors.engine import Engine
from actors.loop import Loop, RolloutSettings, Tokenizer
from mgpo.boxes import BoxRule
from mgpo.checks import prompt_image_limit
from mgpo.images import ImageStore
from mgpo.resize import PixelBudget
from mgpo.templates import Mode, template_for, with_box_hint
from runtime.affinity import pin
from runtime.metrics import RolloutMetrics, serve_metrics, unregister
from runtime.queue import Queue, group_id
from runtime.redis_client import connect
from runtime.run_state import RunState
from runtime.trajectories import crop_area_ratios, group_entry, push_recent


@dataclass(frozen=True)
class ActorSpec:
    """What one rollout actor needs; nothing else of the run's config reaches it."""

    name: str
    model_path: str
    engine: str  # "vllm" | "hf"
    redis_url: str
    run: str
    image_store: str
    mode: str = Mode.MGPO.value
    max_crops: int = 1
    n: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_turn_tokens: int = 256
    max_model_len: int = 8192
    min_pixels: int = 64 * 28 * 28
    max_pixels: int = 256 * 28 * 28
    batch_prompts: int = 4
    box_rule: str = BoxRule.STRICT.value
    iou_reward: str = "continuous"
    format_weight: float = 0.5
    invalid_crop: str = "original"
    direct_bonus: float = 0.0
    box_hint: bool = False
    pre_shrink: bool = False  # evaluation only: the MGPO reference's input frame (mgpo.resize)
    claim_idle_ms: int = 60_000
    max_deliveries: int = 3  # a prompt delivered this often without completing goes to the dead letters
    seed: int = 0
    dtype: str = "fp32"  # "fp32" | "bf16": the engine's, as the learner's (model.dtype)
    tensor_parallel: int = 1  # GPUs the vLLM engine shards the model over
    stream_weights: bool = False  # apply each broadcast bucket as it lands (memory) instead of all at once
    cpu_affinity: tuple[int, ...] = ()  # CPU cores the actor and its engine run on; empty: anywhere
    weights: str | None = None  # a snapshot to load before producing anything (joining mid-run, resuming)
    version: int = 0  # the policy version of `weights`
    metrics_port: int | None = None  # None: no Prometheus endpoint; 0: any free port
    recent: int = 200  # trajectory groups kept in Redis for the viewer


@dataclass
class ActorStats:
    state: str = "starting"  # starting | idle | rolling_out | loading_weights | admission_wait | stopped
    prompts: int = 0
    groups: int = 0
    samples: int = 0
    valid_grounding: int = 0
    reward_sum: float = 0.0
    generated_tokens: int = 0
    rollout_seconds: float = 0.0
    policy_version: int = 0
    admission_waits: int = 0  # polls that found the actors too far ahead of the learner
    redis_errors: int = 0  # Redis unreachable (restarting); the actor waits and carries on
    failed_prompts: int = 0  # rollouts that raised: left pending with their reason (runtime.queue)


def build_engine(spec: ActorSpec) -> Engine:
    max_images = prompt_image_limit(template_for(Mode(spec.mode), spec.max_crops).max_crops)
    budget = PixelBudget(spec.min_pixels, spec.max_pixels)
    if spec.engine == "vllm":
        from actors.vllm_engine import VLLMEngine

        return VLLMEngine(
            spec.model_path,
            max_images,
            budget,
            dtype=spec.dtype,
            max_model_len=spec.max_model_len,
            seed=spec.seed,
            tensor_parallel=spec.tensor_parallel,
        )
    if spec.engine == "hf":
        import torch

        from actors.hf_engine import HFEngine

        return HFEngine(
            spec.model_path, budget, dtype=torch.bfloat16 if spec.dtype == "bf16" else torch.float32
        )
    raise ValueError(f"unknown engine {spec.engine!r}; choose 'vllm' or 'hf'")


def engine_tokenizer(engine: Engine) -> object:
    """The HF tokenizer an engine runs with."""
    llm = getattr(engine, "llm", None)
    return llm.get_tokenizer() if llm is not None else engine.tokenizer  # type: ignore[attr-defined]


def rollout_settings(spec: ActorSpec) -> RolloutSettings:
    template = template_for(Mode(spec.mode), spec.max_crops)
    return RolloutSettings(
        template=with_box_hint(template) if spec.box_hint else template,
        budget=PixelBudget(spec.min_pixels, spec.max_pixels, spec.pre_shrink),
        n=spec.n,
        max_turn_tokens=spec.max_turn_tokens,
        max_model_len=spec.max_model_len,
        temperature=spec.temperature,
        top_p=spec.top_p,
        box_rule=BoxRule(spec.box_rule),
        iou_reward=spec.iou_reward,
        format_weight=spec.format_weight,
        invalid_crop=spec.invalid_crop,
        direct_bonus=spec.direct_bonus,
    )


class RolloutWorker:
    def __init__(self, spec: ActorSpec) -> None:
        started = time.perf_counter()
        self.spec = spec
        if spec.cpu_affinity:
            pin(spec.cpu_affinity, "rollout.cpu_affinity")
        self.engine = build_engine(spec)
        self.loop = Loop(
            self.engine,
            Tokenizer(engine_tokenizer(self.engine)),
            ImageStore(spec.image_store),
            rollout_settings(spec),
            spec.name,
        )
        self.queue = Queue(
            connect(spec.redis_url),
            spec.run,
            spec.name,
            claim_idle_ms=spec.claim_idle_ms,
            max_deliveries=spec.max_deliveries,
        )
        self.queue.ensure_groups()
        self.run_state = RunState(self.queue.client, spec.run)
        if spec.weights is not None:
            self.engine.load_weights(spec.weights, spec.version)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stats = ActorStats(policy_version=self.engine.version)
        self.metrics: RolloutMetrics | None = None
        if spec.metrics_port is not None:
            from prometheus_client import CollectorRegistry

            self.metrics = RolloutMetrics(spec.run, CollectorRegistry())
            self.metrics_target = serve_metrics(
                self.metrics.registry, self.queue.client, spec.run, spec.name, "rollout", spec.metrics_port
            )
        self._set_state("idle")
        self._steps = 0
        self._failed_batches = 0  # batches in a row in which every prompt failed
        self.init_seconds = time.perf_counter() - started  # the engine's start-up, mostly (the run's startup)

    def _set_state(self, state: str) -> None:
        self._stats.state = state
        if self.metrics is not None:
            self.metrics.set_state(state)

    def step(self, block_ms: int = 500) -> int:
        """One batch: take prompts, roll them out, push the groups and ack; returns the prompts done."""
        taken = self._take(block_ms)
        if not taken:
            return 0
        with self._lock:
            self._set_state("rolling_out")
            start = time.perf_counter()
            done, groups = self._rollout(taken, seed=self.spec.seed + 7919 * self._steps)
            seconds = time.perf_counter() - start
            self._steps += 1
        self.queue.complete_prompts([m for m, _ in done], groups)
        entries = [group_entry(r, g, self.loop.original_size) for (_, r), g in zip(done, groups, strict=True)]
        push_recent(self.queue.client, self.spec.run, entries, self.spec.recent)
        self._count(groups, seconds)
        if self.metrics is not None:
            self.metrics.observe(groups, seconds, crop_area_ratios(entries), self.engine.version)
        return len(taken)

    def _rollout(self, taken: list, seed: int) -> tuple[list, list]:
        """Roll out the batch; if that raises, each prompt alone, so that one poison prompt fails by itself
        (left pending with its reason, retried, dead-lettered after `max_deliveries`) and the rest goes on.
        Returns the (message id, record) pairs done and their groups."""
        try:
            groups = self.loop.rollout([r for _, r in taken], seed, [group_id(m) for m, _ in taken])
            self._failed_batches = 0
            return taken, groups
        except redis.ConnectionError:
            raise
        except Exception as err:
            if len(taken) == 1:
                return self._failed(taken, [err], [], [])
        done, groups, failed, errors = [], [], [], []
        for message_id, record in taken:
            try:
                groups += self.loop.rollout([record], seed, [group_id(message_id)])
                done.append((message_id, record))
            except redis.ConnectionError:
                raise
            except Exception as err:
                failed.append((message_id, record))
                errors.append(err)
        return self._failed(failed, errors, done, groups)

    def _failed(self, failed: list, errors: list, done: list, groups: list) -> tuple[list, list]:
        for (message_id, _), err in zip(failed, errors, strict=True):
            self.queue.fail_prompt(message_id, f"{type(err).__name__}: {err}")
        self._stats.failed_prompts += len(failed)
        if self.metrics is not None and failed:
            self.metrics.failed_prompts.labels(self.spec.run).inc(len(failed))
        self._failed_batches = 0 if done else self._failed_batches + 1
        if self._failed_batches >= 3:
            # every prompt of three batches in a row failed: the engine, not the prompts, is broken;
            # stopping lets the driver replace this actor (the prompts stay pending for the others)
            raise RuntimeError(f"three batches in a row failed whole; last error: {errors[-1]!r}")
        return done, groups

    def _take(self, block_ms: int) -> list:
        """A dead actor's prompts first (admitted once already), then new ones as far as admission allows."""
        want = self.spec.batch_prompts
        taken = self.queue.reclaim_prompts(want)
        state = self.run_state.read()
        behind = state.version - self.engine.version > state.max_staleness  # would only produce stale groups
        granted = 0 if behind else self.run_state.reserve(want - len(taken))
        if granted:
            fresh = self.queue.read_prompts(granted, block_ms=block_ms)
            self.run_state.release(granted - len(fresh))
            taken += fresh
        elif not taken:
            self._stats.admission_waits += 1
            if self.metrics is not None:
                self.metrics.admission_waits.labels(self.spec.run).inc()
            self._set_state("admission_wait")
            time.sleep(block_ms / 1000)
        return taken

    def _count(self, groups: list, seconds: float) -> None:
        s = self._stats
        samples = [x for g in groups for x in g.samples]
        self._set_state("idle")
        s.prompts += len(groups)
        s.groups += len(groups)
        s.samples += len(samples)
        s.valid_grounding += sum(x.valid_grounding for x in samples)
        s.reward_sum += sum(x.reward for x in samples)
        s.generated_tokens += sum(x.sampled_tokens for x in samples)
        s.rollout_seconds += seconds
        s.policy_version = self.engine.version

    def run(self, max_prompts: int | None = None) -> dict[str, object]:
        """Pull until stopped (or `max_prompts` done); returns the stats."""
        done = 0
        while not self._stop.is_set() and (max_prompts is None or done < max_prompts):
            try:
                done += self.step()
            except redis.ConnectionError:
                # Redis restarting: our taken prompts stay pending and are reclaimed, nothing is lost
                self._stats.redis_errors += 1
                if self.metrics is not None:
                    self.metrics.redis_errors.labels(self.spec.run).inc()
                self._set_state("idle")
                time.sleep(1.0)
        self._set_state("stopped" if self._stop.is_set() else "idle")
        return self.stats()

    def stop(self) -> None:
        self._stop.set()

    def load_weights(self, path: str, version: int) -> int:
        """Swap weights between batches; returns the version now in use."""
        with self._lock:
            self._set_state("loading_weights")
            self.engine.load_weights(path, version)
            self._set_state("idle")
            self._stats.policy_version = version
            if self.metrics is not None:
                self.metrics.version.labels(self.spec.run).set(version)
        return self.engine.version

    def receive_weights(self, address: list, rank: int, plan: list, version: int) -> int:
        """Receive the learner's broadcast between batches; returns the version now in use. A streamed
        broadcast that fails midway left the weights part new, part old: the actor stops (its prompts are
        reclaimed by others) and the driver replaces it with one that loads a whole snapshot."""
        with self._lock:
            self._set_state("loading_weights")
            try:
                self.engine.receive_weights(address, rank, plan, version, self.spec.stream_weights)
            except Exception as err:
                if self.spec.stream_weights:
                    self.stop()
                    raise RuntimeError(
                        f"a streamed weight broadcast failed midway ({err!r}): stopping"
                    ) from err
                raise
            finally:
                self._set_state("idle")
            self._stats.policy_version = version
            if self.metrics is not None:
                self.metrics.version.labels(self.spec.run).set(version)
        return self.engine.version

    def health(self) -> dict[str, object]:
        return {
            "name": self.spec.name,
            "state": self._stats.state,
            "policy_version": self.engine.version,
            "pid": os.getpid(),
            "init_seconds": self.init_seconds,
        }

    def stats(self) -> dict[str, object]:
        return asdict(self._stats)

    def close(self) -> None:
        if self.metrics is not None:
            unregister(self.queue.client, self.spec.run, [self.spec.name])
        self.engine.close()


def start_rollout_actor(
    spec: ActorSpec, num_cpus: float = 1.0, num_gpus: float = 0.0, resources: dict[str, float] | None = None
) -> object:
    """A Ray actor running a RolloutWorker; threaded so control calls are served while it pulls.

    `num_cpus` is a logical reservation: the driver starts Ray with enough logical CPUs for every actor and
    the learner, so none stays pending forever on a 2-core machine.
    """
    import ray

    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, resources=resources or {}, max_concurrency=4)(
        RolloutWorker
    )
    # On a CPU the engine runs in the actor's own process: no EngineCore and worker processes that each import
    # torch and vLLM again (engine start 27 s -> 10-12 s on 2 cores, the same tokens/s: measured), and none
    # left behind when the actor is killed. On GPUs vLLM keeps its processes (tensor parallelism needs them).
    env = {} if num_gpus or spec.engine != "vllm" else {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    if spec.cpu_affinity and env:  # vLLM-CPU binds its OpenMP threads itself: to these cores, not its choice
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, spec.cpu_affinity))
    return remote.options(name=spec.name, runtime_env={"env_vars": env}).remote(spec)
