"""Our dataset folder: `images/` (an ImageStore), `prompts.jsonl` (PromptRecords), `dataset.json` (what made it).

Every loader of a published layout produces the same PromptRecords; `mgpo data synth` writes this layout.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from mgpo.data.synth import (
    SynthKnobs,
    SynthSample,
    synth_choice_sample,
    synth_counting_sample,
    synth_grounding_sample,
    synth_looks_sample,
)
from mgpo.images import ImageStore
from mgpo.records import PromptRecord, RecordError, TaskKind

PROMPTS_FILE = "prompts.jsonl"
META_FILE = "dataset.json"
IMAGES_DIR = "images"

GENERATORS: dict[str, tuple[TaskKind, Callable[[int, int, SynthKnobs], SynthSample]]] = {
    "choice": (TaskKind.MULTIPLE_CHOICE, synth_choice_sample),
    "grounding": (TaskKind.MULTI_IMAGE_GROUNDING, synth_grounding_sample),
    "counting": (TaskKind.COUNTING, synth_counting_sample),
    "looks": (TaskKind.MULTIPLE_CHOICE, synth_looks_sample),
}


def _encode(image: Image.Image, image_format: str) -> bytes:
    buf = io.BytesIO()
    if image_format == "jpeg":
        # Quality 95 keeps 2-px stripes intact; PNG of a 2K cluttered image is ~10x larger.
        image.save(buf, format="JPEG", quality=95)
    else:
        image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_synthetic(
    out: str | os.PathLike[str],
    n: int,
    seed: int,
    task: str = "choice",
    knobs: SynthKnobs = SynthKnobs(),
    image_format: str = "jpeg",
    progress: bool = True,
) -> Path:
    """Generate `n` samples of `task` into the folder `out` (appending to nothing: the file is rewritten)."""
    if task not in GENERATORS:
        raise ValueError(f"unknown synthetic task {task!r}; choose one of {sorted(GENERATORS)}")
    if image_format not in ("jpeg", "png"):
        raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")
    kind, generate = GENERATORS[task]
    out = Path(out)
    store = ImageStore(out / IMAGES_DIR)
    with open(out / PROMPTS_FILE, "w") as prompts:
        for index in tqdm(range(n), desc=f"synth {task}", unit="sample", disable=not progress):
            sample = generate(seed, index, knobs)
            images = tuple(store.put_bytes(_encode(im, image_format), check=False) for im in sample.images)
            record = PromptRecord(
                id=f"synth-{task}-{seed}-{index}",
                kind=kind,
                question=sample.question,
                images=images,
                answer=sample.answer,
                choices=sample.choices,
                target_box=sample.target_box,
                points=sample.points,
                category=sample.category,
                source="synthetic",
            )
            prompts.write(record.to_json() + "\n")
    meta = {"format": "mgpo-synthetic", "task": task, "n": n, "seed": seed, "image_format": image_format}
    meta["knobs"] = asdict(knobs)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_prompts(
    root: str | os.PathLike[str], malformed: list[tuple[str, str]] | None = None
) -> Iterator[PromptRecord]:
    """The records of a dataset folder, in file order. A malformed line raises RecordError with its number,
    or, given a `malformed` list, is skipped and listed there as ("line N", reason)."""
    path = Path(root) / PROMPTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{root} is not a dataset folder: no {PROMPTS_FILE}")
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    yield PromptRecord.from_json(line)
                except RecordError as err:
                    if malformed is None:
                        raise RecordError(f"{path}:{number}: {err}") from err
                    malformed.append((f"line {number}", str(err)))


def open_store(root: str | os.PathLike[str]) -> ImageStore:
    return ImageStore(Path(root) / IMAGES_DIR)


def write_prompts(root: str | os.PathLike[str], records: list[PromptRecord], meta: dict[str, object]) -> None:
    """Write records (whose images are already in `root/images`) as a dataset folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / PROMPTS_FILE, "w") as out:
        for record in records:
            out.write(record.to_json() + "\n")
    (root / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def write_subset(
    root: str | os.PathLike[str], records: list[PromptRecord], source: ImageStore, meta: dict[str, object]
) -> None:
    """Write `records` of another dataset folder (images in `source`) as a dataset folder of their own."""
    store = open_store(root)
    for record in records:
        for digest in record.images:
            store.put_bytes(source.path(digest).read_bytes(), check=False)  # checked when first stored
    write_prompts(root, records, meta)
