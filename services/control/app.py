"""`create_app`: the FastAPI app of the control plane, wired from its routers (services.control.routes)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from runtime.config import ServeConfig
from services.control.plane import ControlPlane
from services.control.routes import data, health, metrics, runs, viewer


def create_app(settings: ServeConfig, redis_url: str) -> FastAPI:
    plane = ControlPlane(settings, redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        plane.autoscaler.start()
        yield
        plane.autoscaler.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="MGPO control plane",
        version="0.1.0",
        description="Runs, actors, prompts, trajectories and metrics of MGPO training.",
    )
    app.state.plane = plane

    @app.middleware("http")
    async def body_limit(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > plane.upload_limit):
            return JSONResponse({"detail": f"request body over the {settings.max_upload_mb} MB limit"}, 413)
        return await call_next(request)

    @app.exception_handler(redis.ConnectionError)
    async def redis_down(request: Request, err: redis.ConnectionError) -> JSONResponse:
        return JSONResponse({"detail": f"Redis is unreachable: {err}"}, status.HTTP_503_SERVICE_UNAVAILABLE)

    for module in (health, metrics, runs, data, viewer):
        app.include_router(module.router)
    app.include_router(viewer.page)
    app.mount("/viewer/static", StaticFiles(directory=viewer.VIEWER), name="viewer-static")
    return app
