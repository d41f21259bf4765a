"""The Trainer: one run's driver, top to bottom. Set-up, then the step loop; between steps it acts on the
control plane's requests, reconciles actor membership, syncs weights every `sync_every` steps and
checkpoints every `checkpoint_every`. A dead learner is restarted from its latest checkpoint. Ctrl-C
checkpoints first, then stops."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import redis
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from learner.checkpoint import latest_checkpoint
from learner.ranks import start_learner
from mgpo.checks import screen
from mgpo.data.dataset import open_store, read_prompts
from mgpo.records import PromptRecord
from runtime.config import RunConfig
from runtime.metrics_log import MetricsLog
from runtime.queue import Queue
from runtime.redis_client import connect
from runtime.redis_server import RedisServer
from runtime.run_state import RunState
from services.autoscale import wait_share_average
from services.driver.feeder import Feeder
from services.driver.membership import Membership
from services.driver.messages import first_line, shown
from services.driver.prepare import actor_spec, learner_spec, prepare_data, prepare_model
from services.driver.ray_start import EarlyRay, start_ray
from services.driver.weight_sync import WeightSync
from services.runs import Runs


class RunDirInUse(FileExistsError):
    """The run folder holds a previous run and neither --resume nor a new name was given."""


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        resume: bool = False,
        console: Console | None = None,
        early_ray: EarlyRay | None = None,
    ) -> None:
        self.config, self.resume = config, resume
        self.early_ray = early_ray  # Ray already starting (mgpo train begins it before importing this)
        self.console = console or Console(soft_wrap=True)
        self.run_dir = config.run_dir
        self.redis_server: RedisServer | None = None
        self._learner_starts = 0
        self._stopping = threading.Event()  # ends the feeder and the heartbeat
        self._started_ray = False
        self._wait_share: float | None = None  # for the autoscaler (services.autoscale)
        self._last_sync: dict[str, float] | None = None
        self.totals = dict.fromkeys(("wait", "step", "sync", "sync_bytes", "loop"), 0.0)
        self.totals.update(dict.fromkeys(("syncs", "groups", "samples", "steps"), 0))
        # where the time to the first step goes: seconds per stage, in order (summary.json, one line at step 1);
        # "process": from the process's start to here (imports, config), the whole of it under `mgpo train`
        self.startup: dict[str, float] = {"process": time.time() - psutil.Process().create_time()}
        self._stage_start = time.perf_counter()

    def _stage(self, name: str) -> None:
        """Close the start-up stage `name` (it began where the previous one ended)."""
        now = time.perf_counter()
        self.startup[name] = now - self._stage_start
        self._stage_start = now

    # ---- set-up ---------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        cfg = self.config
        if not self.resume and latest_checkpoint(self.run_dir / "checkpoints") is not None:
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
        self._connect()
        self._stage("redis")
        self.data_dir = prepare_data(cfg, self.console)
        self.records = self._screen_data()
        self._stage("data")
        self.model_path = prepare_model(cfg, self.data_dir, self.console)
        self._stage("model")
        self._started_ray = self.early_ray.result() if self.early_ray is not None else start_ray(cfg)
        self._stage("ray")
        self.membership = Membership(
            cfg.name,
            self.run_dir,
            lambda name, index, weights, version: actor_spec(
                cfg, self.model_path, self.redis_url, name, index, weights, version
            ),
            (cfg.rollout.gpus_per_actor, cfg.rollout.ray_resources),
            (self.run_state, self.registry, self.queue),
            self.console,
        )
        # a private server's URL only in processes.json: a configured one may carry a password
        self.membership.redis_url = self.redis_url if self.redis_server is not None else None
        self.weight_sync = WeightSync(
            self.membership,
            self.run_state,
            cfg.learner.sync_timeout_s,
            self.console,
            cfg.rollout.tensor_parallel,
        )

    def _connect(self) -> None:
        """Redis (private, or the configured URL), the run registered first (so the control plane sees this
        run, and why it failed, from the start), the streams and the run state."""
        cfg = self.config
        url = cfg.queue.redis_url or os.environ.get("MGPO_REDIS_URL")  # the env keeps a password out of files
        if url is None:
            self.redis_server = RedisServer(data_dir=self.run_dir / "redis").start()
            url = self.redis_server.url
        self.redis_url = url
        client = connect(url)
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

    def _heartbeat(self) -> None:
        while not self._stopping.wait(10.0):
            try:
                self.run_state.set(heartbeat=int(time.time()))
            except redis.ConnectionError:
                pass  # Redis restarting: the next beat gets through

    def _screen_data(self) -> list[PromptRecord]:
        """The dataset's records the loop can roll out; the rest are listed once and skipped (one bad record
        never stops a run)."""
        refused: list[tuple[str, str]] = []
        records = list(read_prompts(self.data_dir, malformed=refused))
        good, bad = screen(
            records, open_store(self.data_dir).problems, self.config.rollout.prompt_image_limit
        )
        refused += bad
        if refused:
            listed = "; ".join(f"{record_id}: {reason}" for record_id, reason in refused[:5])
            self.console.print(f"[yellow]{len(refused)} records refused[/] ({escape(listed)[:1000]})")
        if not good:
            raise ValueError(f"no record of {self.data_dir} can be rolled out")
        return good

    def _start_feeder(self) -> None:
        client = connect(self.redis_url)
        queue = Queue(client, self.config.name, "feeder", max_len=self.config.queue.max_len)
        self.feeder = Feeder(self.records, self.config.data.epochs, queue, self._stopping)
        self.feeder.start(position=self.run_state.read().fed)

    def planned_steps(self) -> int:
        prompts = len(self.records) * self.config.data.epochs
        by_data = -(-prompts // self.config.learner.groups_per_step)
        return min(self.config.steps, by_data) if self.config.steps else by_data

    def _start_learner(self, resume: bool) -> None:
        import ray

        self.learners = start_learner(
            learner_spec(self.config, self.model_path, self.redis_url, resume),
            incarnation=self._learner_starts,
            num_gpus=self.config.learner.gpus,
            resources=self.config.learner.ray_resources,
        )
        self.learner = self.learners.head  # for all that is not collective
        self._learner_starts += 1
        if not resume:
            # a fresh policy is the model folder itself (version 0): the actors' engines start while the
            # learner initialises, instead of after it (the two longest start-up stages, overlapped)
            self.membership.reconcile(None)
        info = self.learners.call("info")  # every rank is up (a rank that failed to start fails this)
        self.membership.pids["learner"] = info["pid"]
        for rank, handle in enumerate(self.learners.ranks[1:], start=1):
            self.membership.pids[f"learner-rank-{rank}"] = ray.get(handle.info.remote())["pid"]
        self.weight_sync.new_learner(self.learners)
        self.run_state.set(version=info["version"])

    # ---- the run --------------------------------------------------------------------------------------

    def run(self) -> dict[str, object]:
        with self._ending(on_interrupt=self._checkpoint_on_interrupt):
            self._prepare()
            self.metrics = MetricsLog(self.run_dir)
            self.console.print(f"starting the learner (DeepSpeed ZeRO-{self.config.learner.zero_stage})")
            self._start_learner(resume=self.resume)
            self._stage("learner")
            start_version = self._learner_version()
            self.console.print(f"learner ready at version {start_version}")
            self.membership.reconcile(self.learners)
            self._start_feeder()
            started = time.perf_counter()
            try:
                stopped = self._loop(start_version, self.planned_steps())
            finally:
                self.totals["loop"] = time.perf_counter() - started
            self._set_status("stopped" if stopped else "finished")
        return self.summary()

    @contextlib.contextmanager
    def _ending(self, on_interrupt: Callable[[], None] = lambda: None) -> Iterator[None]:
        """How the body ends sets the run's status: Ctrl-C or SIGTERM `stopped` (the same command continues
        it), any other error `failed` with its first line; everything is shut down after, either way."""
        try:
            yield
        except KeyboardInterrupt:
            on_interrupt()
            self._set_status("stopped")
            raise
        except BaseException as err:
            self._set_status("failed", error=first_line(err))
            raise
        finally:
            self._shutdown()

    def _checkpoint_on_interrupt(self) -> None:
        if hasattr(self, "learner"):  # interrupted in set-up there is nothing to checkpoint yet
            self.console.print("[yellow]interrupted[/]: writing a checkpoint before stopping")
            self._checkpoint()

    def _loop(self, version: int, total: int) -> bool:
        """Train until `total` steps, the data's end or a stop request (returns True for the latter)."""
        cfg = self.config.learner
        columns = (TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        checkpointed, stopped = version, False
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task("steps", total=total, completed=version)
            while version < total:
                if self._requests():
                    stopped = True
                    break
                outcome = self._step()
                if outcome == "exhausted":
                    break
                if outcome == "restarted":
                    version = self._learner_version()
                    progress.update(task, completed=version)
                    self._sync_and_log(version)
                    continue
                self.membership.reconcile(self.learners)
                if outcome is None:
                    self._catch_up(version)
                    continue
                version = int(outcome["version"])
                self._log_step(version, outcome)
                progress.update(task, completed=version)
                if version % cfg.sync_every == 0:
                    self._sync_and_log(version)
                if version % cfg.checkpoint_every == 0:
                    self._checkpoint()
                    checkpointed = version
        if checkpointed != version:
            self._checkpoint()
        self._export()
        return stopped

    def _step(self) -> dict[str, float] | str | None:
        """One learner step: its stats; None when no full step's groups came in time; "exhausted" when the
        data is used up; "restarted" when the learner died and was restarted from its checkpoint."""
        import ray

        try:
            stats = self.learners.call("step", timeout_s=self.config.learner.step_timeout_s)
            if stats is None and self.feeder.exhausted():
                stats = self.learners.call("step", timeout_s=1.0, partial=True)
                if stats is None:
                    self.console.print("the data is used up")
                    return "exhausted"
            return stats
        except ray.exceptions.RayActorError as err:
            self.console.print(f"[red]learner died[/] ({shown(err)}): restarting from its checkpoint")
            self._start_learner(resume=True)
            return "restarted"

    def _learner_version(self) -> int:
        import ray

        return ray.get(self.learner.info.remote())["version"]

    def _requests(self) -> bool:
        """Act on the control plane's requests between steps; True when asked to stop."""
        state = self.run_state.read()
        if state.checkpoint_requested:
            self._checkpoint()
            self.run_state.set(checkpoint_requested=0)
        if state.stop:
            self.console.print("stop requested: checkpointing and stopping")
        return bool(state.stop)

    def _catch_up(self, version: int) -> None:
        """Sync members that hold older weights than the learner's while no groups come in. Without it a run
        whose learner stepped with no actor in the broadcast set (actors joining, a learner replaying its
        pending groups) waits forever: admission follows the synced version, the learner needs groups."""
        if self.membership.members and self.weight_sync.synced < version:
            self._sync_and_log(version)

    def _sync_and_log(self, version: int) -> None:
        import ray

        try:
            stats = self.weight_sync(self.learners)
        except ray.exceptions.RayActorError as err:  # the learner died mid-sync: the next step restarts it
            self.console.print(f"[red]learner died during the weight sync[/] ({shown(err)})")
            return
        if stats is None:
            self.console.print(f"[yellow]v{version}: no actor received the weights[/]")
            return
        self.totals["sync"] += stats["sync_seconds"] + stats["sync_join_seconds"]
        self.totals["sync_bytes"] += stats["sync_bytes"]
        self.totals["syncs"] += 1
        members = list(self.weight_sync.members)
        self.metrics.write(version, "sync", {**stats, "actors": len(members), "members": members})
        self._last_sync = stats

    def _log_step(self, version: int, stats: dict[str, float]) -> None:
        self._wait_share = wait_share_average(self._wait_share, stats["wait_seconds"], stats["step_seconds"])
        self.registry.set(self.config.name, learner_wait_share=self._wait_share)
        for key in ("wait", "step"):
            self.totals[key] += stats[f"{key}_seconds"]
        self.totals["groups"] += stats["groups"]
        self.totals["samples"] += stats["samples"]
        self.totals["steps"] += 1
        actors = len(self.membership.members)
        depth = self.queue.depth()
        values = {**stats, **{f"queue_{k}": float(v) for k, v in depth.items()}, "actors": actors}
        self.metrics.write(version, "step", values)
        if "first_step" not in self.startup:
            self._log_startup()
        sync = self._last_sync
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
            f"step {stats['step_seconds']:.1f}s  {sync_text}  actors {actors}"
        )

    def _log_startup(self) -> None:
        """The first step's end: how long each start-up stage took (the actors' engines start during
        `first_step`, which also holds the first rollouts and the first learner step)."""
        self._stage("first_step")
        actors = self.membership.init_seconds
        if actors:
            self.startup["actor_init"] = min(actors.values())
        total = sum(v for k, v in self.startup.items() if k != "actor_init")
        self.startup["total"] = total
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.startup.items() if k != "total")
        self.console.print(f"first step {total:.1f}s after the process started ({parts})")

    def _checkpoint(self) -> None:
        import ray

        try:
            folder = self.learners.call("checkpoint")
            self.console.print(f"checkpoint {folder}")
        except ray.exceptions.RayError as err:
            self.console.print(f"[red]checkpoint failed[/]: {shown(err)}")

    def _export(self) -> None:

        self.learners.call("export", str(self.run_dir / "final"))
        self.console.print(f"final policy (HF format): {self.run_dir / 'final'}")

    # ---- the end --------------------------------------------------------------------------------------

    def _set_status(self, status: str, error: str = "") -> None:
        if hasattr(self, "registry"):
            try:
                self.registry.set(self.config.name, status=status, error=error)
            except redis.ConnectionError:
                self.console.print(f"[yellow]Redis unreachable: run status {status!r} not recorded[/]")

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
            "startup_seconds": self.startup,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(out, indent=1))
        return out

    def _shutdown(self) -> None:
        import ray

        self._stopping.set()
        try:
            if hasattr(self, "membership"):
                self.membership.close_all()
            if hasattr(self, "metrics"):
                self.metrics.close()
            if self._started_ray:
                ray.shutdown()
        finally:  # whatever cut the shutdown short, the run's private Redis server must not outlive it
            if self.redis_server is not None:
                self.redis_server.stop()
