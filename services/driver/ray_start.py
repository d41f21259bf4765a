"""Ray for a run: join the configured cluster or start a local one, early if the caller can, and the SIGTERM
handling that must follow Ray's own. Light on imports on purpose: `mgpo train` starts a local Ray from here
before it imports the driver (torch, DeepSpeed's and vLLM's callers: ~3 s), so the two overlap."""

from __future__ import annotations

import os
import signal
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.config import RunConfig


def _interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop: a repeat must not cut the shutdown short
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm() -> None:
    """SIGTERM (a pod being deleted, `kill`) stops the run as Ctrl-C does, so its finally shuts Redis, the
    actors and the learner down. Ray's driver installs its own handler, which ends the process at once and
    left the run's private Redis server running: this one replaces it, after ray.init."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def start_ray(config: RunConfig) -> bool:
    """Join the configured Ray cluster or start a local one; False when Ray was already up."""
    import ray

    if ray.is_initialized():
        return False
    if config.ray_address is not None:
        ray.init(address=config.ray_address, namespace="mgpo", log_to_driver=False)
        stop_on_sigterm()
        return True
    # logical CPUs: every actor and learner rank reserve one; on a 2-core box they time-share
    cpus = max(os.cpu_count() or 1, config.rollout.actors + config.learner.world_size + 3)
    # Ray starts its workers at nice 15 by default: beside another job at the usual priority the learner and
    # the actors then got a few % of the cores (the demo made no RL step in 5 minutes beside a 2-thread torch
    # job). They are the run's work: the same priority as the driver, unless RAY_worker_niceness says else.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(
        num_cpus=cpus, namespace="mgpo", include_dashboard=False, log_to_driver=False, logging_level="WARNING"
    )
    stop_on_sigterm()
    try:
        check_gpus(config, ray.cluster_resources().get("GPU", 0.0))
    except ValueError:
        ray.shutdown()
        raise
    return True


def check_gpus(config: RunConfig, available: float) -> None:
    """On a local Ray, a learner or an actor that asks for more GPUs than the machine has would wait for
    them forever: refuse at start, saying which key asks for what."""
    wants = {
        "learner.gpus x learner.world_size": config.learner.gpus * config.learner.world_size,
        "rollout.gpus_per_actor": config.rollout.gpus_per_actor,
    }
    over = [f"{key} {amount:g}" for key, amount in wants.items() if amount > available]
    if over:
        raise ValueError(
            f"{', '.join(over)}, but this machine has {available:g} GPUs (local Ray): lower them"
        )


class EarlyRay:
    """`start_ray` in a thread, begun before the driver's imports; `result()` waits for it (and raises what it
    raised). Measured on 2 cores (a 3-step MGPO run of the demo's model): Ray's stage 3.0 s -> 1.7-2.1 s."""

    def __init__(self, config: RunConfig) -> None:
        self.started: bool | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(config,), name="early-ray", daemon=True)
        self.thread.start()

    def _run(self, config: RunConfig) -> None:
        try:
            self.started = start_ray(config)
        except BaseException as err:  # noqa: BLE001  (handed to the main thread by result())
            self.error = err
        self.done.set()
        # Ray starts its local processes with PR_SET_PDEATHSIG, which fires when the *thread* that started them
        # ends (not the process): the GCS died with a thread that returned. This one lives as long as the
        # process (a daemon); ray.shutdown() still ends them.
        threading.Event().wait()

    def result(self) -> bool:
        self.done.wait()
        if self.error is not None:
            raise self.error
        stop_on_sigterm()  # the thread could not: signal handlers belong to the main thread
        return bool(self.started)
