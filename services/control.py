"""The control plane: a FastAPI app over the run registry in Redis (`mgpo serve`).

It owns no training state: runs live in Redis (services.runs, runtime.run_state, the streams) and in their
driver processes, so a restarted control plane re-attaches to whatever is running. Mutations need the bearer
token (services.auth); reads need it only with `auth_reads`. Bad input is a 4xx with a JSON `detail`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import redis
import yaml
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile, status
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mgpo.boxes import Box
from mgpo.data.dataset import open_store, read_prompts
from mgpo.images import ImageError, ImageStore
from mgpo.records import PromptRecord, RecordError, TaskKind
from runtime.config import ConfigError, RunConfig, ServeConfig, parse_config
from runtime.metrics import RunsCollector, discovery
from runtime.queue import Queue, QueueFull
from runtime.run_state import RunState
from runtime.trajectories import read_recent
from services import auth
from services.autoscale import Autoscaler
from services.launcher import launch_driver
from services.runs import ENDED, Runs, RunView

VIEWER = Path(__file__).parent / "viewer"
HASH = r"^[0-9a-f]{64}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


# ---- request and response bodies ---------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCreate(_Body):
    config: dict[str, Any] = Field(
        default_factory=dict, description="a run config, as in the YAML files (name, model, rollout, ...)"
    )


class Scale(_Body):
    actors: int = Field(ge=0, le=1024, description="desired rollout actors")


class PromptIn(_Body):
    id: str | None = Field(None, max_length=200, description="default: a fresh id")
    kind: Literal["multiple_choice", "counting"] = "multiple_choice"
    question: str = Field(min_length=1, max_length=4000)
    images: list[Annotated[str, Field(pattern=HASH)]] = Field(
        min_length=1, max_length=8, description="content hashes from POST /runs/{name}/images"
    )
    answer: str = Field(min_length=1, max_length=200)
    choices: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=26)
    target_box: tuple[float, float, float, float] | None = Field(
        None, description="hidden true region in original pixels (evaluation only; never rewarded)"
    )

    @model_validator(mode="after")
    def _answer(self) -> PromptIn:
        if self.kind == "multiple_choice":
            letters = [chr(ord("A") + i) for i in range(len(self.choices))]
            if len(self.choices) < 2 or self.answer not in letters:
                raise ValueError(
                    f"multiple choice needs >= 2 choices and an answer among {letters or ['A', 'B']}"
                )
        elif not self.answer.isdigit():
            raise ValueError("a counting answer is a whole number")
        return self


class PromptsIn(_Body):
    prompts: list[PromptIn] = Field(min_length=1, max_length=1000)


class DatasetIn(_Body):
    path: str = Field(min_length=1, max_length=4096, description="a dataset folder (prompts.jsonl, images/)")


class RunOut(BaseModel):
    name: str
    status: str
    run_dir: str
    created: float
    driver_pid: int
    error: str
    version: int
    paused: bool
    stop_requested: bool
    state: dict[str, int]
    queue: dict[str, int]
    actors: dict[str, int]
    last_step: dict[str, Any] | None = None
    wait_share: float | None = None
    autoscale: str | None = Field(None, description="the autoscaler's last decision and why")


class Accepted(BaseModel):
    run: str
    detail: str


# ---- the app ------------------------------------------------------------------------------------------


def create_app(settings: ServeConfig, redis_url: str) -> FastAPI:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=30)
    runs = Runs(client)
    autoscaler = Autoscaler(runs, settings.autoscale_interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        autoscaler.start()
        yield
        autoscaler.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="MGPO control plane",
        version="0.1.0",
        description="Runs, actors, prompts, trajectories and metrics of MGPO training.",
    )
    drivers: dict[str, subprocess.Popen[bytes]] = {}  # the drivers this process started (reaped on reads)
    state_dir = Path(settings.state_dir).resolve()
    defaults = _run_defaults(settings)
    registry = CollectorRegistry()
    registry.register(RunsCollector(lambda: [_reaped(runs, drivers, v) for v in runs.views()]))
    limit = settings.max_upload_mb << 20

    def out(view: RunView) -> RunOut:
        decision = autoscaler.decisions.get(view.name)
        return _out(view).model_copy(
            update={"autoscale": f"{decision[0]}: {decision[1]}" if decision else None}
        )

    def read_access(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(auth.bearer)],
    ) -> None:
        if settings.auth_reads:
            auth.check(credentials)

    write = [Depends(auth.require_token)]
    read = [Depends(read_access)]

    @app.middleware("http")
    async def body_limit(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return JSONResponse(
                {"detail": f"request body over the {settings.max_upload_mb} MB limit"},
                413,
            )
        return await call_next(request)

    @app.exception_handler(redis.ConnectionError)
    async def redis_down(request: Request, err: redis.ConnectionError) -> JSONResponse:
        return JSONResponse({"detail": f"Redis is unreachable: {err}"}, status.HTTP_503_SERVICE_UNAVAILABLE)

    def run_or_404(name: str) -> RunView:
        view = runs.view(name) if re.match(NAME, name) else None
        if view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run named {name!r}")
        return _reaped(runs, drivers, view)

    def live_or_409(name: str) -> RunView:
        view = run_or_404(name)
        if view.status in ENDED:
            raise HTTPException(status.HTTP_409_CONFLICT, f"run {name!r} is {view.status}: not running")
        return view

    # ---- health and metrics -------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Redis unreachable"}})
    def readyz() -> dict[str, str]:
        client.ping()
        return {"status": "ready"}

    @app.get("/metrics", tags=["metrics"], response_class=Response, dependencies=read)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/metrics/targets", tags=["metrics"], dependencies=read)
    def metrics_targets() -> list[dict[str, Any]]:
        """Every learner and actor metrics endpoint, in Prometheus' HTTP service-discovery format."""
        return discovery(client, runs.names())

    # ---- runs ---------------------------------------------------------------------------------------

    @app.get("/runs", tags=["runs"], dependencies=read)
    def list_runs() -> list[RunOut]:
        return [out(_reaped(runs, drivers, v)) for v in runs.views()]

    @app.post("/runs", tags=["runs"], status_code=status.HTTP_201_CREATED, dependencies=write)
    def create_run(body: RunCreate) -> RunOut:
        config = _run_config(body.config, defaults, settings, state_dir)
        if not runs.register(config.name, config.model_dump(mode="json"), str(config.run_dir)):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"a run named {config.name!r} exists: choose another name, or POST /runs/{config.name}/resume",
            )
        drivers[config.name] = _launch(config, resume=False, redis_url=redis_url)
        runs.set(config.name, driver_pid=drivers[config.name].pid)
        return out(run_or_404(config.name))

    @app.get("/runs/{name}", tags=["runs"], dependencies=read)
    def get_run(name: str) -> RunOut:
        return out(run_or_404(name))

    @app.post("/runs/{name}/pause", tags=["runs"], status_code=202, dependencies=write)
    def pause_run(name: str) -> Accepted:
        live_or_409(name)
        RunState(client, name).set(paused=1)
        return Accepted(run=name, detail="paused: actors finish their batch and take no new prompts")

    @app.post("/runs/{name}/resume", tags=["runs"], status_code=202, dependencies=write)
    def resume_run(name: str) -> Accepted:
        """Un-pause a running run; restart a stopped, failed or lost one from its latest checkpoint."""
        view = run_or_404(name)
        if view.status not in ENDED:
            RunState(client, name).set(paused=0)
            return Accepted(run=name, detail="resumed: admission is open again")
        config = parse_config(view.config, f"run {name} config")
        RunState(client, name).set(paused=0, stop=0)
        runs.set(name, status="created", error="")
        drivers[name] = _launch(config, resume=True, redis_url=redis_url)
        runs.set(name, driver_pid=drivers[name].pid)
        return Accepted(run=name, detail="restarting the driver from the latest checkpoint")

    @app.post("/runs/{name}/stop", tags=["runs"], status_code=202, dependencies=write)
    def stop_run(name: str) -> Accepted:
        live_or_409(name)
        RunState(client, name).set(stop=1)
        return Accepted(run=name, detail="stopping: the driver checkpoints and exits after the current step")

    @app.post("/runs/{name}/checkpoint", tags=["runs"], status_code=202, dependencies=write)
    def checkpoint_run(name: str) -> Accepted:
        live_or_409(name)
        RunState(client, name).set(checkpoint_requested=1)
        return Accepted(run=name, detail="a checkpoint is written after the current step")

    @app.put("/runs/{name}/actors", tags=["runs"], dependencies=write)
    def scale_run(name: str, body: Scale) -> RunOut:
        live_or_409(name)
        RunState(client, name).set(desired_actors=body.actors)
        return out(run_or_404(name))

    # ---- data ---------------------------------------------------------------------------------------

    @app.post("/runs/{name}/images", tags=["data"], status_code=201, dependencies=write)
    async def upload_images(name: str, files: Annotated[list[UploadFile], File()]) -> dict[str, list[str]]:
        """Store images in the run's image store; returns their content hashes for prompts."""
        store = _store(run_or_404(name))
        hashes = []
        for upload in files:
            data = await upload.read(limit + 1)
            if len(data) > limit:
                raise HTTPException(413, f"{upload.filename}: over the {settings.max_upload_mb} MB limit")
            try:
                hashes.append(store.put_bytes(data))
            except ImageError as err:
                raise HTTPException(422, f"{upload.filename}: {err}") from err
        return {"images": hashes}

    @app.post("/runs/{name}/prompts", tags=["data"], status_code=202, dependencies=write)
    def enqueue_prompts(name: str, body: PromptsIn) -> dict[str, Any]:
        view = live_or_409(name)
        store = _store(view)
        missing = sorted({h for p in body.prompts for h in p.images if not store.path(h).exists()})
        if missing:
            raise HTTPException(422, f"images not in the run's store (upload them first): {missing[:10]}")
        records = [_record(p, i) for i, p in enumerate(body.prompts)]
        return {"run": name, "enqueued": len(_put(client, name, records))}

    @app.post("/runs/{name}/datasets", tags=["data"], status_code=202, dependencies=write)
    def enqueue_dataset(name: str, body: DatasetIn) -> dict[str, Any]:
        view = live_or_409(name)
        folder = Path(body.path).resolve()
        roots = [Path(r).resolve() for r in settings.dataset_roots]
        if not any(folder.is_relative_to(r) for r in roots):
            raise HTTPException(
                403, f"{body.path} is outside the allowed dataset roots {settings.dataset_roots}"
            )
        try:
            records = list(read_prompts(folder))
        except (FileNotFoundError, RecordError) as err:
            raise HTTPException(422, str(err)) from err
        source, store = open_store(folder), _store(view)
        try:
            for digest in {h for r in records for h in r.images}:
                if not store.path(digest).exists():
                    store.put_bytes(source.path(digest).read_bytes())
        except (OSError, ImageError) as err:
            raise HTTPException(422, f"dataset images: {err}") from err
        return {"run": name, "enqueued": len(_put(client, name, records))}

    @app.get("/runs/{name}/trajectories", tags=["data"], dependencies=read)
    def trajectories(
        name: str,
        limit: int = Query(50, ge=1, le=1000),
        valid: bool | None = Query(None, description="only valid (true) or invalid (false) grounding"),
        min_reward: float | None = Query(None, ge=-1e6, le=1e6),
        max_reward: float | None = Query(None, ge=-1e6, le=1e6),
    ) -> list[dict[str, Any]]:
        """Recent trajectories, newest first: one item per sample, with its group's prompt and version."""
        run_or_404(name)
        return read_recent(client, name, limit, valid, min_reward, max_reward)

    @app.get(
        "/runs/{name}/images/{digest}",
        tags=["data"],
        dependencies=read,
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}},
    )
    def image(
        name: str,
        digest: str,
        region: str | None = Query(None, max_length=200, description="x1,y1,x2,y2 in original pixels"),
        max_side: int = Query(1024, ge=16, le=4096),
    ) -> Response:
        """An image of the run (or a region of it), scaled to fit `max_side`, as JPEG."""
        if not re.match(HASH, digest):
            raise HTTPException(422, "an image is named by its sha256 hex digest")
        store = _store(run_or_404(name))
        if not store.path(digest).exists():
            raise HTTPException(404, f"image {digest} is not in run {name!r}'s store")
        try:
            picture = store.get(digest)
        except ImageError as err:
            raise HTTPException(422, str(err)) from err
        if region is not None:
            picture = picture.crop(_region(region, picture.size))
        picture.thumbnail((max_side, max_side))
        out = io.BytesIO()
        picture.save(out, "JPEG", quality=90)
        return Response(out.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    # ---- the viewer ---------------------------------------------------------------------------------

    @app.get("/viewer", tags=["viewer"], response_class=FileResponse, include_in_schema=False)
    def viewer() -> FileResponse:
        return FileResponse(VIEWER / "index.html")

    app.mount("/viewer/static", StaticFiles(directory=VIEWER), name="viewer-static")
    app.state.client, app.state.drivers = client, drivers
    return app


# ---- helpers --------------------------------------------------------------------------------------------


def _run_defaults(settings: ServeConfig) -> dict[str, Any]:
    """The run defaults file, read once at start-up: a broken one stops `mgpo serve` with its reason."""
    if settings.run_defaults is None:
        return {}
    try:
        raw = yaml.safe_load(Path(settings.run_defaults).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"run_defaults {settings.run_defaults}: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"run_defaults {settings.run_defaults}: the top level must be a mapping")
    return raw


def _run_config(
    raw: dict[str, Any], defaults: dict[str, Any], settings: ServeConfig, state_dir: Path
) -> RunConfig:
    """The posted config over the defaults, placed on this control plane's Ray and state folder (and its
    Redis: see `_launch`)."""
    raw = _merge(defaults, raw)
    raw["output_dir"] = str(state_dir)
    if settings.ray_address is not None and "ray_address" not in raw:
        raw["ray_address"] = settings.ray_address
    try:
        config = parse_config(raw, "config")
    except ConfigError as err:
        raise HTTPException(422, str(err)) from err
    return config


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` wins; mappings are merged key by key."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def _launch(config: RunConfig, resume: bool, redis_url: str) -> subprocess.Popen[bytes]:
    """The driver gets this control plane's Redis in its environment (a password stays out of files)."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    path = config.run_dir / "request.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return launch_driver(path, config.run_dir, resume, {"MGPO_REDIS_URL": redis_url})


def _reaped(runs: Runs, drivers: dict[str, subprocess.Popen[bytes]], view: RunView) -> RunView:
    """A driver this process started that exited before recording its status is `failed`, with its log."""
    process = drivers.get(view.name)
    if process is not None and process.poll() is not None:
        del drivers[view.name]
        fresh = runs.view(view.name) or view
        if fresh.status in ("created", "running") and process.returncode != 0:
            log = Path(fresh.run_dir) / "driver.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            error = f"driver exited with code {process.returncode}: {tail[0] if tail else ''}"[:500]
            runs.set(view.name, status="failed", error=error)
            fresh = runs.view(view.name) or fresh
        return fresh
    return view


def _out(view: RunView) -> RunOut:
    last = None
    path = Path(view.run_dir) / "metrics.jsonl"
    if path.exists():
        with open(path, "rb") as f:
            lines = [line for line in f.read()[-65536:].splitlines() if b'"kind": "step"' in line]
        last = json.loads(lines[-1]) if lines else None
    status_ = "stopping" if view.state.get("stop") and view.status == "running" else view.status
    return RunOut(
        name=view.name,
        status=status_,
        run_dir=view.run_dir,
        created=view.created,
        driver_pid=view.driver_pid,
        error=view.error,
        version=view.state.get("version", 0),
        paused=bool(view.state.get("paused", 0)),
        stop_requested=bool(view.state.get("stop", 0)),
        state=view.state,
        queue=view.queue,
        actors=view.actors,
        last_step=last,
        wait_share=view.wait_share,
    )


def _store(view: RunView) -> ImageStore:
    config = parse_config(view.config, f"run {view.name} config")
    return ImageStore(config.data_dir / "images")


def _record(p: PromptIn, index: int) -> PromptRecord:
    return PromptRecord(
        id=p.id or f"api-{time.time_ns()}-{index}",
        kind=TaskKind(p.kind),
        question=p.question,
        images=tuple(p.images),
        answer=p.answer,
        choices=tuple(p.choices),
        target_box=Box(*p.target_box) if p.target_box is not None else None,
        source="api",
    )


def _put(client: redis.Redis, run: str, records: list[PromptRecord]) -> list[str]:
    try:
        return Queue(client, run, "control").put_prompts(records, timeout_s=5.0, counter="enqueued")
    except QueueFull as err:
        raise HTTPException(429, f"the prompt stream is full; try again later ({err})") from err


def _region(text: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError as err:
        raise HTTPException(422, "region is x1,y1,x2,y2 (four numbers)") from err
    w, h = size
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise HTTPException(422, f"region {text} is not inside the {w}x{h} image with x1 < x2, y1 < y2")
    return int(x1), int(y1), max(int(x1) + 1, int(x2)), max(int(y1) + 1, int(y2))
