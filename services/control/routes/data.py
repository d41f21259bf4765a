"""Data into a run: images into its store (content-addressed), prompts and whole dataset folders into its
prompt stream."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool

from mgpo.checks import screen
from mgpo.data.dataset import PROMPTS_FILE, open_store, read_prompts
from mgpo.images import ImageError
from services.control.deps import WRITE, LiveRun, Plane, Run
from services.control.plane import image_store, inside_roots, run_config
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
            hashes.append(await run_in_threadpool(plane.store_image, store, data))
        except ImageError as err:
            raise HTTPException(422, f"{upload.filename}: {err}") from err
    return {"images": hashes}


@router.post("/prompts", status_code=202)
def enqueue_prompts(view: LiveRun, plane: Plane, body: PromptsIn) -> dict[str, Any]:
    store = image_store(view)
    missing = sorted({h for p in body.prompts for h in p.images if not store.path(h).exists()})
    if missing:
        raise HTTPException(422, f"images not in the run's store (upload them first): {missing[:10]}")
    records = [p.record(i) for i, p in enumerate(body.prompts)]
    limit = run_config(view).rollout.prompt_image_limit
    refused = screen(records, lambda _: [], limit).refused
    if refused:
        raise HTTPException(422, f"{len(refused)} prompts the run cannot roll out: {_listed(refused)}")
    return plane.put(view, records)


@router.post("/datasets", status_code=202)
def enqueue_dataset(view: LiveRun, plane: Plane, body: DatasetIn) -> dict[str, Any]:
    """Enqueue a dataset folder under one of the allowed roots; records the loop cannot roll out are
    refused one by one (listed in the answer) and the rest are enqueued."""
    roots = plane.settings.dataset_roots
    folder = inside_roots(body.path, roots)
    inside_roots(folder / PROMPTS_FILE, roots)  # a symlinked prompts file must not lead out either
    refused: list[tuple[str, str]] = []
    try:
        records = list(read_prompts(folder, malformed=refused))
    except (OSError, ValueError) as err:  # not a dataset folder, a folder named prompts.jsonl, not UTF-8
        raise HTTPException(422, f"{body.path}: {err}") from err
    source, store = open_store(folder), image_store(view)

    def copied(digest: str) -> list[str]:
        """Copy one image into the run's store (decoded and checked on the way): its problems, if any."""
        try:
            if not store.path(digest).exists():
                path = inside_roots(source.path(digest), roots)
                store.put_bytes(path.read_bytes())
        except HTTPException as err:
            return [f"image {digest}: {err.detail}"]
        except (OSError, ImageError) as err:
            return [f"image {digest}: {err}"]
        return []

    good, bad = screen(records, copied, run_config(view).rollout.prompt_image_limit)
    refused += bad
    if not good:
        raise HTTPException(422, f"no record of {body.path} can be rolled out: {_listed(refused)}")
    return {**plane.put(view, good), "refused": len(refused), "problems": _listed(refused)}


def _listed(refused: list[tuple[str, str]], most: int = 10) -> list[str]:
    """The first refused records with their reasons: an error never echoes a whole request back."""
    return [f"{record_id[:200]}: {reason[:300]}" for record_id, reason in refused[:most]]
