"""What one control-plane process holds (its Redis client, the run registry, the autoscaler, the drivers it
started) and the service functions the routers call. Training state is never here: it lives in Redis and in
the drivers, so a restarted control plane re-attaches to whatever is running."""

from __future__ import annotations

import functools
import io
import json
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
import yaml
from fastapi import HTTPException
from prometheus_client import CollectorRegistry

from mgpo.images import ImageError, ImageStore
from mgpo.records import PromptRecord
from runtime.config import ConfigError, RunConfig, ServeConfig, parse_config
from runtime.metrics import RunsCollector
from runtime.queue import Queue, QueueFull
from services.autoscale import Autoscaler
from services.control.schemas import RunOut
from services.launcher import launch_driver
from services.runs import Runs, RunView

DECODES = 2  # concurrent full image decodes per control-plane process
CACHED_SIDE = 1024  # renders up to this side are cached (a few hundred KB each), larger ones are not


class ControlPlane:
    def __init__(self, settings: ServeConfig, redis_url: str) -> None:
        self.settings, self.redis_url = settings, redis_url
        self.client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=30)
        self.runs = Runs(self.client)
        self.autoscaler = Autoscaler(self.runs, settings.autoscale_interval_s)
        self.drivers: dict[str, subprocess.Popen[bytes]] = {}  # the drivers this process started
        self.state_dir = Path(settings.state_dir).resolve()
        self.run_defaults = _run_defaults(settings)
        self.upload_limit = settings.max_upload_mb << 20
        # full decodes of originals (an 8K x 8K image is ~0.5 GB while decoding) run at most two at a time
        self.decodes = threading.BoundedSemaphore(DECODES)
        self.registry = CollectorRegistry()
        self.registry.register(RunsCollector(self.views))

    # ---- runs ---------------------------------------------------------------------------------------

    def view(self, name: str) -> RunView | None:
        view = self.runs.view(name)
        return None if view is None else self.reaped(view)

    def views(self) -> list[RunView]:
        return [self.reaped(v) for v in self.runs.views()]

    def reaped(self, view: RunView) -> RunView:
        """A driver this process started that exited before recording its status is `failed`, with its log."""
        process = self.drivers.get(view.name)
        if process is None or process.poll() is None:
            return view
        if self.drivers.pop(view.name, None) is None:
            return view  # another request thread reaped it a moment ago
        fresh = self.runs.view(view.name) or view
        if fresh.status in ("created", "running") and process.returncode != 0:
            log = Path(fresh.run_dir) / "driver.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            error = f"driver exited with code {process.returncode}: {tail[0] if tail else ''}"[:500]
            self.runs.set(view.name, status="failed", error=error)
            fresh = self.runs.view(view.name) or fresh
        return fresh

    def out(self, view: RunView) -> RunOut:
        decision = self.autoscaler.decisions.get(view.name)
        return _out(view).model_copy(
            update={"autoscale": f"{decision[0]}: {decision[1]}" if decision else None}
        )

    def run_config(self, posted: dict[str, Any]) -> RunConfig:
        """The posted config over the defaults, placed on this control plane's Redis (see `launch`), Ray and
        state folder. A posted config may not name another Redis or Ray, nor data or a model outside the
        allowed roots: the service reads and connects only where its operator said."""
        for key, path in (("queue", "redis_url"), (None, "ray_address"), (None, "output_dir")):
            section = posted.get(key) if key else posted
            if isinstance(section, dict) and section.get(path) is not None:
                name = f"{key}.{path}" if key else path
                raise HTTPException(422, f"{name}: a run created over the API uses the control plane's own")
        raw = _merge(self.run_defaults, posted)
        raw["output_dir"] = str(self.state_dir)
        if self.settings.ray_address is not None and "ray_address" not in raw:
            raw["ray_address"] = self.settings.ray_address
        try:
            config = parse_config(raw, "config")
        except ConfigError as err:
            raise HTTPException(422, str(err)) from err
        if config.data.path is not None:
            inside_roots(config.data.path, self.settings.dataset_roots)
        if config.model.path != "tiny":
            inside_roots(config.model.path, self.settings.model_roots)
        return config

    def launch(self, config: RunConfig, resume: bool) -> None:
        """Start the run's driver. It gets this control plane's Redis in its environment (a password stays out
        of files)."""
        config.run_dir.mkdir(parents=True, exist_ok=True)
        path = config.run_dir / "request.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        process = launch_driver(path, config.run_dir, resume, {"MGPO_REDIS_URL": self.redis_url})
        self.drivers[config.name] = process
        self.runs.set(config.name, driver_pid=process.pid, launched=time.time())

    # ---- data ---------------------------------------------------------------------------------------

    def store_image(self, store: ImageStore, data: bytes) -> str:
        """Decode-check and store uploaded bytes (on a worker thread: the event loop never decodes)."""
        with self.decodes:
            return store.put_bytes(data)

    def render(self, store: ImageStore, digest: str, region: str | None, max_side: int) -> bytes:
        """An image (or a region of it) scaled to fit `max_side`, as JPEG; small renders are cached, so the
        viewer's repeated reads decode an original once."""
        if max_side <= CACHED_SIDE:
            return _cached_render(store.root, digest, region, max_side, self.decodes)
        return _render(store, digest, region, max_side, self.decodes)

    def put(self, view: RunView, records: list[PromptRecord]) -> dict[str, Any]:
        """Enqueue all or nothing (429 when the stream has no room for all of them), skipping ids enqueued
        before: a client may retry a failed request without doubling its prompts."""
        queue = Queue(self.client, view.name, "control", max_len=run_config(view).queue.max_len)
        try:
            ids, duplicates = queue.put_new_prompts(records, timeout_s=5.0)
        except QueueFull as err:
            raise HTTPException(429, f"the prompt stream is full: {err}; try again later") from err
        return {"run": view.name, "enqueued": len(ids), "duplicates": duplicates}


def image_store(view: RunView) -> ImageStore:
    return ImageStore(run_config(view).data_dir / "images")


def run_config(view: RunView) -> RunConfig:
    return parse_config(view.config, f"run {view.name} config")


def validation_detail(errors: Sequence[dict[str, Any]], most: int = 20) -> list[dict[str, Any]]:
    """FastAPI's validation errors without the inputs they quote: an input may hold NaN or Infinity (which
    JSON cannot render: a 500) or be the whole 100,000-item request (a 15 MB answer). The first `most`."""
    out = [{"type": e["type"], "loc": list(e["loc"]), "msg": str(e["msg"])[:500]} for e in errors[:most]]
    if len(errors) > most:
        out.append({"type": "more", "loc": [], "msg": f"{len(errors) - most} more errors not shown"})
    return out


def inside_roots(path: str | Path, roots: tuple[str, ...]) -> Path:
    """`path` resolved (symlinks followed), or 403 when it lies outside every allowed root; 422 when it
    cannot be a path at all (a NUL byte)."""
    try:
        resolved = Path(path).resolve()
    except (OSError, ValueError) as err:
        raise HTTPException(422, f"not a usable path: {err}") from err
    if not any(resolved.is_relative_to(Path(r).resolve()) for r in roots):
        raise HTTPException(403, f"{str(path)[:500]} is outside the allowed roots {list(roots)}")
    return resolved


@functools.lru_cache(maxsize=256)
def _cached_render(
    root: Path, digest: str, region: str | None, max_side: int, decodes: threading.BoundedSemaphore
) -> bytes:
    return _render(ImageStore(root), digest, region, max_side, decodes)


def _render(
    store: ImageStore, digest: str, region: str | None, max_side: int, decodes: threading.BoundedSemaphore
) -> bytes:
    with decodes:
        try:
            picture = store.get(digest)
        except ImageError as err:
            raise HTTPException(422, str(err)) from err
        if region is not None:
            picture = picture.crop(region_box(region, picture.size))
        picture.thumbnail((max_side, max_side))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=90)
    return out.getvalue()


def region_box(text: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """`x1,y1,x2,y2` in original pixels, checked against the image's size, as PIL's crop box."""
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError as err:
        raise HTTPException(422, "region is x1,y1,x2,y2 (four numbers)") from err
    w, h = size
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise HTTPException(422, f"region {text} is not inside the {w}x{h} image with x1 < x2, y1 < y2")
    return int(x1), int(y1), max(int(x1) + 1, int(x2)), max(int(y1) + 1, int(y2))


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


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` wins; mappings are merged key by key."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


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
