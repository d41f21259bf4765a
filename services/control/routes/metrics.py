"""The control plane's own metrics (one series set per run) and the discovery of every learner and actor
metrics endpoint for Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runtime.metrics import discovery
from services.control.deps import READ, Plane

router = APIRouter(tags=["metrics"], dependencies=READ)


@router.get("/metrics", response_class=Response)
def metrics(plane: Plane) -> Response:
    return Response(generate_latest(plane.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/metrics/targets")
def metrics_targets(plane: Plane) -> list[dict[str, Any]]:
    """Every learner and actor metrics endpoint, in Prometheus' HTTP service-discovery format."""
    return discovery(plane.client, plane.runs.names())
