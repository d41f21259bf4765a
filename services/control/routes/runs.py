"""Runs: create (starts a driver), list, read, pause, resume (or restart from a checkpoint), stop,
checkpoint, scale the rollout actors. Commands reach the driver through the run state in Redis."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from runtime.config import parse_config
from runtime.run_state import RunState
from services.control.deps import READ, WRITE, LiveRun, Plane, Run
from services.control.schemas import Accepted, RunCreate, RunOut, Scale
from services.runs import ENDED

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("", dependencies=READ)
def list_runs(plane: Plane) -> list[RunOut]:
    return [plane.out(v) for v in plane.views()]


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=WRITE)
def create_run(body: RunCreate, plane: Plane) -> RunOut:
    config = plane.run_config(body.config)
    if not plane.runs.register(config.name, config.model_dump(mode="json"), str(config.run_dir)):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"a run named {config.name!r} exists: choose another name, or POST /runs/{config.name}/resume",
        )
    plane.launch(config, resume=False)
    return plane.out(plane.view(config.name))


@router.get("/{name}", dependencies=READ)
def get_run(view: Run, plane: Plane) -> RunOut:
    return plane.out(view)


@router.post("/{name}/pause", status_code=202, dependencies=WRITE)
def pause_run(view: LiveRun, plane: Plane) -> Accepted:
    RunState(plane.client, view.name).set(paused=1)
    return Accepted(run=view.name, detail="paused: actors finish their batch and take no new prompts")


@router.post("/{name}/resume", status_code=202, dependencies=WRITE)
def resume_run(view: Run, plane: Plane) -> Accepted:
    """Un-pause a running run; restart a stopped, failed or lost one from its latest checkpoint."""
    if view.status not in ENDED:
        RunState(plane.client, view.name).set(paused=0)
        return Accepted(run=view.name, detail="resumed: admission is open again")
    config = parse_config(view.config, f"run {view.name} config")
    RunState(plane.client, view.name).set(paused=0, stop=0)
    plane.runs.set(view.name, status="created", error="")
    plane.launch(config, resume=True)
    return Accepted(run=view.name, detail="restarting the driver from the latest checkpoint")


@router.post("/{name}/stop", status_code=202, dependencies=WRITE)
def stop_run(view: LiveRun, plane: Plane) -> Accepted:
    RunState(plane.client, view.name).set(stop=1)
    return Accepted(run=view.name, detail="stopping: the driver checkpoints and exits after the current step")


@router.post("/{name}/checkpoint", status_code=202, dependencies=WRITE)
def checkpoint_run(view: LiveRun, plane: Plane) -> Accepted:
    RunState(plane.client, view.name).set(checkpoint_requested=1)
    return Accepted(run=view.name, detail="a checkpoint is written after the current step")


@router.put("/{name}/actors", dependencies=WRITE)
def scale_run(view: LiveRun, body: Scale, plane: Plane) -> RunOut:
    RunState(plane.client, view.name).set(desired_actors=body.actors)
    return plane.out(plane.view(view.name) or view)
