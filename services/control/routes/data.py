"""Data into a run: images into its store (content-addressed), prompts and whole dataset folders into its
prompt stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, UploadFile

from mgpo.data.dataset import open_store, read_prompts
from mgpo.images import ImageError
from mgpo.records import RecordError
from services.control.deps import WRITE, LiveRun, Plane, Run
from services.control.plane import image_store, prompt_record
from services.control.schemas import DatasetIn, PromptsIn

router = APIRouter(prefix="/runs/{name}", tags=["data"], dependencies=WRITE)


@router.post("/images", status_code=201)
async def upload_images(
    view: Run, plane: Plane, files: Annotated[list[UploadFile], File()]
) -> dict[str, list[str]]:
    """Store images in the run's image store; returns their content hashes for prompts."""
    store, limit = image_store(view), plane.upload_limit
    hashes = []
    for upload in files:
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{upload.filename}: over the {plane.settings.max_upload_mb} MB limit")
        try:
            hashes.append(store.put_bytes(data))
        except ImageError as err:
            raise HTTPException(422, f"{upload.filename}: {err}") from err
    return {"images": hashes}


@router.post("/prompts", status_code=202)
def enqueue_prompts(view: LiveRun, plane: Plane, body: PromptsIn) -> dict[str, Any]:
    store = image_store(view)
    missing = sorted({h for p in body.prompts for h in p.images if not store.path(h).exists()})
    if missing:
        raise HTTPException(422, f"images not in the run's store (upload them first): {missing[:10]}")
    records = [prompt_record(p, i) for i, p in enumerate(body.prompts)]
    return {"run": view.name, "enqueued": len(plane.put(view.name, records))}


@router.post("/datasets", status_code=202)
def enqueue_dataset(view: LiveRun, plane: Plane, body: DatasetIn) -> dict[str, Any]:
    folder = Path(body.path).resolve()
    allowed = plane.settings.dataset_roots
    if not any(folder.is_relative_to(Path(r).resolve()) for r in allowed):
        raise HTTPException(403, f"{body.path} is outside the allowed dataset roots {allowed}")
    try:
        records = list(read_prompts(folder))
    except (FileNotFoundError, RecordError) as err:
        raise HTTPException(422, str(err)) from err
    source, store = open_store(folder), image_store(view)
    try:
        for digest in {h for r in records for h in r.images}:
            if not store.path(digest).exists():
                store.put_bytes(source.path(digest).read_bytes())
    except (OSError, ImageError) as err:
        raise HTTPException(422, f"dataset images: {err}") from err
    return {"run": view.name, "enqueued": len(plane.put(view.name, records))}
