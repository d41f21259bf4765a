"""Liveness and readiness (readiness needs Redis)."""

from __future__ import annotations

from fastapi import APIRouter

from services.control.deps import Plane

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis unreachable"}})
def readyz(plane: Plane) -> dict[str, str]:
    plane.client.ping()
    return {"status": "ready"}
