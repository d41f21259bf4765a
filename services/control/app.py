"""`create_app`: the FastAPI app of the control plane, wired from its routers (services.control.routes)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from runtime.config import ServeConfig
from services.control.guard import RequestGuard
from services.control.plane import ControlPlane, validation_detail
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

    app.add_middleware(RequestGuard, limit_bytes=plane.upload_limit)

    @app.exception_handler(redis.ConnectionError)
    async def redis_down(request: Request, err: redis.ConnectionError) -> JSONResponse:
        return JSONResponse({"detail": f"Redis is unreachable: {err}"}, status.HTTP_503_SERVICE_UNAVAILABLE)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(err.errors())}, 422)

    for module in (health, metrics, runs, data, viewer):
        app.include_router(module.router)
    app.include_router(viewer.page)
    app.mount("/viewer/static", StaticFiles(directory=viewer.VIEWER), name="viewer-static")
    return app
