"""What the rollout viewer reads: a run's recent trajectories, its images (or regions of them) as JPEG, and
the viewer page itself."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, Response

from mgpo.records import PromptRecord, RecordError
from runtime.queue import Queue
from runtime.trajectories import read_recent
from services.control.deps import READ, Plane, Run
from services.control.plane import image_store
from services.control.schemas import HASH

VIEWER = Path(__file__).resolve().parents[2] / "viewer"

router = APIRouter(tags=["data"], dependencies=READ)
page = APIRouter(tags=["viewer"])  # the page is static: no token needed to load it


@router.get("/runs/{name}/trajectories")
def trajectories(
    view: Run,
    plane: Plane,
    limit: int = Query(50, ge=1, le=1000),
    valid: bool | None = Query(None, description="only valid (true) or invalid (false) grounding"),
    min_reward: float | None = Query(None, ge=-1e6, le=1e6),
    max_reward: float | None = Query(None, ge=-1e6, le=1e6),
) -> list[dict[str, Any]]:
    """Recent trajectories, newest first: one item per sample, with its group's prompt and version."""
    return read_recent(plane.client, view.name, limit, valid, min_reward, max_reward)


@router.get("/runs/{name}/dead")
def dead_letters(view: Run, plane: Plane, limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    """Prompts that never completed (runtime.queue's dead-letter stream), newest first, with the reason."""
    out = []
    for letter in Queue(plane.client, view.name, "control").dead_letters(limit):
        try:
            record = PromptRecord.from_json(letter.get("prompt", ""))
            prompt = {"id": record.id, "kind": record.kind.value, "question": record.question[:300]}
        except RecordError:
            prompt = {"id": "?", "kind": "?", "question": "(unreadable record)"}
        out.append({**prompt, "message_id": letter.get("message_id", ""), "reason": letter.get("reason", "")})
    return out


@router.get(
    "/runs/{name}/images/{digest}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def image(
    view: Run,
    plane: Plane,
    digest: str,
    region: str | None = Query(None, max_length=200, description="x1,y1,x2,y2 in original pixels"),
    max_side: int = Query(1024, ge=16, le=4096),
) -> Response:
    """An image of the run (or a region of it), scaled to fit `max_side`, as JPEG."""
    if not re.match(HASH, digest):
        raise HTTPException(422, "an image is named by its sha256 hex digest")
    store = image_store(view)
    if not store.path(digest).exists():
        raise HTTPException(404, f"image {digest} is not in run {view.name!r}'s store")
    jpeg = plane.render(store, digest, region, max_side)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@page.get("/viewer", response_class=FileResponse, include_in_schema=False)
def viewer() -> FileResponse:
    return FileResponse(VIEWER / "index.html")
