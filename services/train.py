"""`mgpo train`: the Ray driver of one run. It owns nothing the algorithm needs; it wires and watches:

    Redis (private, or the configured URL) <- feeder thread: the dataset, `data.epochs` times
    rollout actors (Ray, elastic: `desired_actors` in the run state)  -> trajectory groups -> learner (Ray)
    every `sync_every` learner steps: weight broadcast learner -> actors; every `checkpoint_every`: checkpoint

Membership is reconciled between learner steps: actors that died are replaced, `mgpo scale` (or the control
plane) changes the desired count, a new actor loads the learner's current weights from a snapshot before it
takes any prompt and joins the broadcast group at the next sync. A dead learner is restarted from its latest
checkpoint. Ctrl-C checkpoints first, then stops.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import redis
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from actors.rollout_actor import ActorSpec, start_rollout_actor
from learner.checkpoint import latest_checkpoint
from learner.engine import EngineConfig
from learner.service import LearnerSpec, start_learner
from mgpo.data.dataset import read_prompts
from mgpo.loss import LossConfig
from mgpo.resize import PixelBudget
from runtime.config import RunConfig
from runtime.metrics import unregister
from runtime.metrics_log import MetricsLog
from runtime.queue import Queue
from runtime.redis_server import RedisServer
from runtime.run_state import RunState
from services.autoscale import wait_share_average
from services.runs import Runs


class RunDirInUse(FileExistsError):
    """The run folder holds a previous run and neither --resume nor a new name was given."""


class Trainer:
    def __init__(self, config: RunConfig, resume: bool = False, console: Console | None = None) -> None:
        self.config, self.resume = config, resume
        self.console = console or Console(soft_wrap=True)
        self.run_dir = config.run_dir
        self.redis_server: RedisServer | None = None
        self.members: dict[str, object] = {}  # actor name -> handle, running and in the broadcast set
        self.joining: dict[str, tuple[object, object]] = {}  # name -> (handle, constructor-done ref)
        self.leaving: dict[str, object] = {}
        self.runs: dict[str, object] = {}  # name -> ref of its `run` call (ready = it stopped or died)
        self.pids: dict[str, int] = {}
        self._address: list | None = None  # the current broadcast generation
        self._address_members: tuple[str, ...] = ()
        self._actor_count = 0
        self._learner_starts = 0
        self._stop_feeding = threading.Event()
        self._feeder: threading.Thread | None = None
        self._feeder_done = threading.Event()
        self._started_ray = False
        self._wait_share: float | None = None  # for the autoscaler (services.autoscale)
        self.totals = {
            "wait": 0.0,
            "step": 0.0,
            "sync": 0.0,
            "sync_bytes": 0.0,
            "syncs": 0,
            "groups": 0,
            "samples": 0,
            "steps": 0,
            "loop": 0.0,
        }

    # ---- set-up ---------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        cfg = self.config
        checkpoints = self.run_dir / "checkpoints"
        if not self.resume and latest_checkpoint(checkpoints) is not None:
            raise RunDirInUse(
                f"{self.run_dir} holds checkpoints of an earlier run: pass --resume to continue it, or choose "
                f"another name / output_dir"
            )
        if cfg.model.path != "tiny" and not (Path(cfg.model.path) / "config.json").exists():
            raise FileNotFoundError(
                f"model.path {cfg.model.path}: no config.json there (a HF model folder is needed)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(
            yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        )
        url = cfg.queue.redis_url or os.environ.get("MGPO_REDIS_URL")  # the env keeps a password out of files
        if url is None:
            self.redis_server = RedisServer(data_dir=self.run_dir / "redis").start()
            self.redis_url = self.redis_server.url
        else:
            self.redis_url = url
        client = redis.Redis.from_url(self.redis_url)
        # registered first, so the control plane sees this run (and why it failed) from the start
        self.registry = Runs(client)
        self.registry.adopt(cfg.name, cfg.model_dump(mode="json"), str(self.run_dir))
        self.registry.set(
            cfg.name, status="running", driver_pid=os.getpid(), driver_host=socket.gethostname(), error=""
        )
        self.queue = Queue(client, cfg.name, "driver", max_len=cfg.queue.max_len)
        self.queue.ensure_groups()
        self.run_state = RunState(client, cfg.name)
        state = self.run_state.read()
        self.run_state.set(
            groups_per_step=cfg.learner.groups_per_step,
            max_staleness=cfg.learner.max_staleness,
            desired_actors=state.desired_actors
            if self.resume and state.desired_actors
            else cfg.rollout.actors,
            stop=0,
            checkpoint_requested=0,
            heartbeat=int(time.time()),
        )
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        self.data_dir = self._data()
        self.model_path = self._model()
        self._start_ray()

    def _heartbeat(self) -> None:
        while not self._stop_feeding.wait(10.0):
            try:
                self.run_state.set(heartbeat=int(time.time()))
            except redis.ConnectionError:
                pass  # Redis restarting: the next beat gets through

    def _model(self) -> str:
        cfg = self.config.model
        if cfg.path != "tiny":
            return cfg.path
        folder = self.run_dir / "model"
        if (folder / "config.json").exists():
            return str(folder)
        from mgpo.models.tiny import build_tiny

        budget = PixelBudget(self.config.rollout.min_pixels, self.config.rollout.max_pixels)
        random_init = self.run_dir / "model-random" if cfg.warmup_steps else folder
        start = time.perf_counter()
        build_tiny(
            random_init,
            tokenizer=cfg.tiny_tokenizer,
            size=cfg.tiny_size,
            seed=self.config.seed,
            budget=budget,
        )
        self.console.print(
            f"built the tiny Qwen2.5-VL ({cfg.tiny_size}) in {random_init} ({time.perf_counter() - start:.1f}s)"
        )
        if cfg.warmup_steps:
            from mgpo.models.warmup import format_warmup

            start = time.perf_counter()
            format_warmup(
                random_init,
                self.data_dir,
                folder,
                budget,
                cfg.warmup_prompts,
                cfg.warmup_steps,
                self.config.seed,
            )
            self.console.print(
                f"format warm start ({cfg.warmup_steps} steps on {cfg.warmup_prompts} prompts, random boxes and "
                f"letters: no answer supervision) -> {folder} ({time.perf_counter() - start:.1f}s)"
            )
        return str(folder)

    def _data(self) -> Path:
        cfg = self.config.data
        folder = self.config.data_dir
        if cfg.path is None and not (folder / "dataset.json").exists():
            from mgpo.data.dataset import write_synthetic

            self.console.print(f"writing {cfg.synth_n} synthetic high-resolution samples to {folder}")
            write_synthetic(folder, n=cfg.synth_n, seed=cfg.synth_seed)
        return folder

    def _start_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.config.ray_address is not None:
            ray.init(address=self.config.ray_address, namespace="mgpo", log_to_driver=False)
        else:
            # logical CPUs: every actor and the learner reserve one; on a 2-core box they time-share
            cpus = max(os.cpu_count() or 1, self.config.rollout.actors + 4)
            ray.init(
                num_cpus=cpus,
                namespace="mgpo",
                include_dashboard=False,
                log_to_driver=False,
                logging_level="WARNING",
            )
        self._started_ray = True

    def _learner_spec(self, resume: bool) -> LearnerSpec:
        cfg = self.config
        lc = cfg.learner
        return LearnerSpec(
            model_path=self.model_path,
            redis_url=self.redis_url,
            run=cfg.name,
            image_store=str(self.data_dir / "images"),
            run_dir=str(self.run_dir),
            loss=LossConfig(clip=lc.clip, kl_coef=lc.kl_coef, entropy_coef=lc.entropy_coef, is_cap=lc.is_cap),
            engine=EngineConfig(
                zero_stage=lc.zero_stage, dtype=cfg.model.dtype, max_grad_norm=lc.max_grad_norm
            ),
            lr=lc.lr,
            groups_per_step=lc.groups_per_step,
            max_staleness=lc.max_staleness,
            bucket_bytes=lc.bucket_mb << 20,
            broadcast_backend=lc.broadcast_backend,
            sync_timeout_s=lc.sync_timeout_s,
            keep_checkpoints=lc.keep_checkpoints,
            resume=resume,
            seed=cfg.seed,
            metrics_port=cfg.metrics.learner_port if cfg.metrics.enabled else None,
        )

    def _actor_spec(self, name: str, weights: str | None, version: int) -> ActorSpec:
        r = self.config.rollout
        return ActorSpec(
            name=name,
            model_path=self.model_path,
            engine=r.engine,
            redis_url=self.redis_url,
            run=self.config.name,
            image_store=str(self.data_dir / "images"),
            mode=r.mode.value,
            max_crops=r.max_crops,
            n=r.n,
            temperature=r.temperature,
            top_p=r.top_p,
            max_turn_tokens=r.max_turn_tokens,
            max_model_len=r.max_model_len,
            min_pixels=r.min_pixels,
            max_pixels=r.max_pixels,
            batch_prompts=r.batch_prompts,
            claim_idle_ms=self.config.queue.claim_idle_ms,
            seed=self.config.seed + 1000 * self._actor_count,
            weights=weights,
            version=version,
            metrics_port=self.config.metrics.actor_port if self.config.metrics.enabled else None,
            recent=self.config.metrics.recent,
        )

    # ---- data -----------------------------------------------------------------------------------------

    def _feed(self) -> None:
        """Append the dataset `epochs` times from where the stream's `fed` counter says it is."""
        records = list(read_prompts(self.data_dir))
        total = len(records) * self.config.data.epochs
        queue = Queue(
            redis.Redis.from_url(self.redis_url),
            self.config.name,
            "feeder",
            max_len=self.config.queue.max_len,
        )
        position = self.run_state.read().fed
        while position < total and not self._stop_feeding.is_set():
            try:
                queue.put_prompts([records[position % len(records)]], timeout_s=1.0)
                position += 1
            except (TimeoutError, redis.ConnectionError):
                time.sleep(0.2)  # full (back-pressure) or Redis restarting: try again
        self._feeder_done.set()

    def _data_exhausted(self) -> bool:
        if not self._feeder_done.is_set():
            return False
        depth = self.queue.depth()
        return depth["prompts_len"] == 0 and depth["prompts_pending"] == 0

    def planned_steps(self) -> int:
        prompts = sum(1 for _ in read_prompts(self.data_dir)) * self.config.data.epochs
        by_data = -(-prompts // self.config.learner.groups_per_step)
        return min(self.config.steps, by_data) if self.config.steps else by_data

    # ---- membership -----------------------------------------------------------------------------------

    def _add_actor(self) -> None:
        import ray

        version = ray.get(self.learner.info.remote())["version"]
        weights = ray.get(self.learner.snapshot.remote())[0] if version > 0 else None
        name = f"{self.config.name}-actor-{self._actor_count}"
        handle = start_rollout_actor(
            self._actor_spec(name, weights, version),
            num_gpus=self.config.rollout.gpus_per_actor,
            resources=self.config.rollout.ray_resources,
        )
        self._actor_count += 1
        self.joining[name] = (handle, handle.health.remote())
        self.console.print(f"actor {name} starting (weights v{version})")

    def _remove_actor(self, name: str) -> None:
        handle = self.members.pop(name)
        handle.stop.remote()  # finishes its batch, so its prompts are acked, not reclaimed
        self.leaving[name] = handle
        self.console.print(f"actor {name} leaving")

    def reconcile(self) -> None:
        """Bring the actors towards `desired_actors`: admit constructed ones, bury dead ones, add, remove."""
        import ray

        for name, (handle, ready) in list(self.joining.items()):
            done, _ = ray.wait([ready], timeout=0)
            if not done:
                continue
            del self.joining[name]
            try:
                self.pids[name] = ray.get(ready)["pid"]
            except ray.exceptions.RayError as err:
                self.console.print(f"[red]actor {name} failed to start[/]: {_shown(err)}")
                continue
            self.members[name] = handle
            self.runs[name] = handle.run.remote()
            self.console.print(f"actor {name} running; joins the broadcast group at the next sync")
        for name in list(self.members):
            done, _ = ray.wait([self.runs[name]], timeout=0)
            if done:
                self.members.pop(name)
                self.pids.pop(name, None)
                unregister(self.queue.client, self.config.name, [name])
                self.console.print(f"[yellow]actor {name} died[/]; its prompts are reclaimed by the others")
        for name, handle in list(self.leaving.items()):
            done, _ = ray.wait([self.runs[name]], timeout=0)
            if done:
                del self.leaving[name]
                self.pids.pop(name, None)
                _close(handle)
        desired = self.run_state.read().desired_actors
        while len(self.members) + len(self.joining) < desired:
            self._add_actor()
        while len(self.members) > desired:
            self._remove_actor(sorted(self.members)[-1])
        self._write_processes()

    def _write_processes(self) -> None:
        states = {n: "running" for n in self.members}
        states.update({n: "joining" for n in self.joining})
        states.update({n: "leaving" for n in self.leaving})
        self.registry.set_actors(self.config.name, states)
        (self.run_dir / "processes.json").write_text(
            json.dumps(
                {
                    # a private server's URL only: a configured one may carry a password
                    "redis_url": self.redis_url if self.redis_server is not None else None,
                    "pids": self.pids,
                    "members": sorted(self.members),
                }
            )
        )

    # ---- weights --------------------------------------------------------------------------------------

    def sync(self) -> dict[str, float] | None:
        """Broadcast the learner's weights to every member; a member that fails is left out of the next
        generation, and the survivors are tried once more at once. Returns the learner's sync stats."""
        for _attempt in range(2):
            stats = self._sync_once()
            if stats is not None:
                return stats
            self.reconcile()
        return None

    def _sync_once(self) -> dict[str, float] | None:
        import ray

        names = tuple(sorted(self.members))
        if not names:
            return None
        if self._address is None or self._address_members != names:
            self._address = ray.get(self.learner.address.remote(len(names) + 1))
            self._address_members = names
        version = ray.get(self.learner.info.remote())["version"]
        plan = self._plan
        sender = self.learner.sync.remote(self._address)
        receivers = {
            n: self.members[n].receive_weights.remote(self._address, rank, plan, version)
            for rank, n in enumerate(names, start=1)
        }
        ray.wait(
            [sender, *receivers.values()],
            num_returns=1 + len(receivers),
            timeout=self.config.learner.sync_timeout_s + 30,
        )
        failed = []
        for name, ref in receivers.items():
            try:
                ray.get(ref, timeout=0)
            except (ray.exceptions.RayError, TimeoutError) as err:
                failed.append(name)
                self.console.print(f"[yellow]sync to {name} failed[/]: {_shown(err)}")
        try:
            stats = ray.get(sender, timeout=0)
        except (ray.exceptions.RayError, TimeoutError) as err:
            self.console.print(f"[yellow]broadcast failed[/]: {_shown(err)}")
            stats = None
        if failed or stats is None:
            self._address = None  # the next try forms a new generation without the failed members
            return None
        self.run_state.set(version=version)
        return stats

    # ---- the run --------------------------------------------------------------------------------------

    def _start_learner(self, resume: bool) -> None:
        import ray

        self.learner = start_learner(
            self._learner_spec(resume),
            incarnation=self._learner_starts,
            num_gpus=self.config.learner.gpus,
            resources=self.config.learner.ray_resources,
        )
        self._learner_starts += 1
        info = ray.get(self.learner.info.remote())
        self.pids["learner"] = info["pid"]
        self._plan = ray.get(self.learner.wire_plan.remote())
        self._address = None
        self.run_state.set(version=info["version"])

    def run(self) -> dict[str, object]:
        import ray

        try:
            self._prepare()
            self.metrics = MetricsLog(self.run_dir)
            self._start_learner(resume=self.resume)
            start_version = ray.get(self.learner.info.remote())["version"]
            self.console.print(f"learner ready at version {start_version}")
            self.reconcile()
            self._feeder = threading.Thread(target=self._feed, name="feeder", daemon=True)
            self._feeder.start()
            total = self.planned_steps()
            started = time.perf_counter()
            try:
                stopped = self._loop(start_version, total)
            finally:
                self.totals["loop"] = time.perf_counter() - started
            self._set_status("stopped" if stopped else "finished")
        except KeyboardInterrupt:
            self.console.print("[yellow]interrupted[/]: writing a checkpoint before stopping")
            self._checkpoint()
            self._set_status("stopped")
            raise
        except BaseException as err:
            self._set_status("failed", error=_first_line(err))
            raise
        finally:
            self._shutdown()
        return self.summary()

    def _set_status(self, status: str, error: str = "") -> None:
        if hasattr(self, "registry"):
            try:
                self.registry.set(self.config.name, status=status, error=error)
            except redis.ConnectionError:
                self.console.print(f"[yellow]Redis unreachable: run status {status!r} not recorded[/]")

    def _requests(self) -> bool:
        """Act on the control plane's requests between steps; True when asked to stop."""
        state = self.run_state.read()
        if state.checkpoint_requested:
            self._checkpoint()
            self.run_state.set(checkpoint_requested=0)
        if state.stop:
            self.console.print("stop requested: checkpointing and stopping")
        return bool(state.stop)

    def _loop(self, version: int, total: int) -> bool:
        """Train until `total` steps, the data's end or a stop request (returns True for the latter)."""
        import ray

        cfg = self.config
        columns = (TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        checkpointed = version
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task("steps", total=total, completed=version)
            stopped = False
            while version < total:
                if self._requests():
                    stopped = True
                    break
                try:
                    stats = ray.get(self.learner.step.remote(timeout_s=cfg.learner.step_timeout_s))
                    if stats is None and self._data_exhausted():
                        stats = ray.get(self.learner.step.remote(timeout_s=1.0, partial=True))
                        if stats is None:
                            self.console.print("the data is used up")
                            break
                except ray.exceptions.RayActorError as err:
                    self.console.print(
                        f"[red]learner died[/] ({_shown(err)}): restarting from its checkpoint"
                    )
                    self._start_learner(resume=True)
                    version = ray.get(self.learner.info.remote())["version"]
                    progress.update(task, completed=version)
                    self._sync_and_log(version)
                    continue
                self.reconcile()
                if stats is None:
                    continue
                version = int(stats["version"])
                self._log_step(version, stats)
                progress.update(task, completed=version)
                if version % cfg.learner.sync_every == 0:
                    self._sync_and_log(version)
                if version % cfg.learner.checkpoint_every == 0:
                    self._checkpoint()
                    checkpointed = version
        if checkpointed != version:
            self._checkpoint()
        ray.get(self.learner.export.remote(str(self.run_dir / "final")))
        self.console.print(f"final policy (HF format): {self.run_dir / 'final'}")
        return stopped

    def _sync_and_log(self, version: int) -> None:
        stats = self.sync()
        if stats is None:
            self.console.print(f"[yellow]v{version}: no actor received the weights[/]")
            return
        self.totals["sync"] += stats["sync_seconds"] + stats["sync_join_seconds"]
        self.totals["sync_bytes"] += stats["sync_bytes"]
        self.totals["syncs"] += 1
        members = list(self._address_members)
        self.metrics.write(version, "sync", {**stats, "actors": len(members), "members": members})
        self._last_sync = stats

    def _log_step(self, version: int, stats: dict[str, float]) -> None:
        self._wait_share = wait_share_average(self._wait_share, stats["wait_seconds"], stats["step_seconds"])
        self.registry.set(self.config.name, learner_wait_share=self._wait_share)
        self.totals["wait"] += stats["wait_seconds"]
        self.totals["step"] += stats["step_seconds"]
        self.totals["groups"] += stats["groups"]
        self.totals["samples"] += stats["samples"]
        self.totals["steps"] += 1
        depth = self.queue.depth()
        values = {**stats, **{f"queue_{k}": float(v) for k, v in depth.items()}, "actors": len(self.members)}
        self.metrics.write(version, "step", values)
        sync = getattr(self, "_last_sync", None)
        sync_text = (
            f"sync {sync['sync_seconds']:.2f}s {sync['sync_bytes_per_second'] / 1e6:.0f} MB/s"
            if sync
            else "sync -"
        )
        self.console.print(
            f"v{version:<4} reward {stats['reward']:.3f}  acc {stats['accuracy']:.3f}  "
            f"valid-grounding {stats['valid_grounding_ratio']:.2f}  "
            f"staleness {stats['staleness_mean']:.1f}/{stats['staleness_max']:.0f}  "
            f"stale-dropped {stats['groups_stale']:.0f}  wait {stats['wait_seconds']:.1f}s  "
            f"step {stats['step_seconds']:.1f}s  {sync_text}  actors {len(self.members)}"
        )

    def _checkpoint(self) -> None:
        import ray

        try:
            folder = ray.get(self.learner.checkpoint.remote())
            self.console.print(f"checkpoint {folder}")
        except ray.exceptions.RayError as err:
            self.console.print(f"[red]checkpoint failed[/]: {_shown(err)}")

    def summary(self) -> dict[str, object]:
        t = self.totals
        busy = t["wait"] + t["step"] + t["sync"]
        out = {
            "run_dir": str(self.run_dir),
            "steps": t["steps"],
            "groups": t["groups"],
            "training_seconds": t["loop"],
            "trajectories_per_second": t["samples"] / t["loop"] if t["loop"] else 0.0,
            "learner_wait_share": t["wait"] / busy if busy else 0.0,
            "step_seconds_mean": t["step"] / max(1, t["steps"]),
            "sync_seconds_mean": t["sync"] / max(1, t["syncs"]),
            "sync_bytes_per_second": t["sync_bytes"] / t["sync"] if t["sync"] else 0.0,
            "syncs": t["syncs"],
        }
        (self.run_dir / "summary.json").write_text(json.dumps(out, indent=1))
        return out

    def _shutdown(self) -> None:
        import ray

        self._stop_feeding.set()
        for name in list(self.members):
            self._remove_actor(name)
        deadline = time.monotonic() + 120
        while self.leaving and time.monotonic() < deadline:
            for name, handle in list(self.leaving.items()):
                done, _ = ray.wait([self.runs[name]], timeout=1)
                if done:
                    del self.leaving[name]
                    _close(handle)
        for handle, _ in self.joining.values():
            _close(handle)
        for handle in self.leaving.values():
            _close(handle)
        if hasattr(self, "metrics"):
            self.metrics.close()
        if self._started_ray:
            ray.shutdown()
        if self.redis_server is not None:
            self.redis_server.stop()


def _close(handle: object) -> None:
    """Shut the engine down (vLLM leaves worker processes behind otherwise), then the actor."""
    import ray

    try:
        ray.get(handle.close.remote(), timeout=60)  # type: ignore[attr-defined]
    except (ray.exceptions.RayError, TimeoutError):
        pass
    ray.kill(handle)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return next((line for line in reversed(text) if line.strip()), type(err).__name__)[:300]


def _shown(err: BaseException) -> str:
    """`err` for the console: errors quote text like gloo's `[/path/pair.cc:537]`, which rich would take for
    a closing markup tag and raise on, killing the run that was reporting a failure it survives."""
    return escape(_first_line(err))


def run_state_of(config: RunConfig) -> RunState:
    """The run state of a running run (its private Redis is found through processes.json)."""
    path = config.run_dir / "processes.json"
    if not path.exists():
        raise FileNotFoundError(f"no running run at {config.run_dir} (processes.json is missing)")
    url = (
        config.queue.redis_url
        or os.environ.get("MGPO_REDIS_URL")
        or json.loads(path.read_text())["redis_url"]
    )
    return RunState(redis.Redis.from_url(url), config.name)


def scale(config: RunConfig, actors: int) -> int:
    """Set a running run's desired actor count (its driver reconciles within one learner step)."""
    if actors < 0:
        raise ValueError(f"--actors must be >= 0, got {actors}")
    run_state_of(config).set(desired_actors=actors)
    return actors


def pause(config: RunConfig, paused: bool) -> None:
    """Stop (or restart) admission: actors finish their batch and take nothing new; the learner waits."""
    run_state_of(config).set(paused=int(paused))
