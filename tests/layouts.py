"""Small folders in the published benchmark layouts (../shared/docs/formats.md), written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def jpeg(path: Path, colour: tuple[int, int, int] = (10, 200, 30), size: tuple[int, int] = (64, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG")


def vstar_folder(root: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """Two questions (one per category, right answer first) and a record without options."""
    for name, options in (("sa_1", ["red", "blue", "green", "white"]), ("sa_2", ["left", "right"])):
        category = "direct_attributes" if name == "sa_1" else "relative_position"
        jpeg(root / category / f"{name}.jpg", size=size)
        meta = {
            "target_object": ["cup"],
            "bbox": [[10, 5, 20, 30]],
            "question": f"Q {name}?",
            "options": options,
        }
        (root / category / f"{name}.json").write_text(json.dumps(meta))
    (root / "direct_attributes" / "sa_3.json").write_text('{"question": "no options"}')
    return root


def mme_folder(root: Path, image_root: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """MME-RealWorld-Lite's JSON list in `root`, its images under `image_root` (another folder)."""
    record = {
        "Question Type": "Multiple Choice",
        "Text": "What is written?",
        "Answer choices": ["(A) one", "(B) two", "(C) three", "(D) four", "(E) five"],
        "Ground truth": "C",
        "Category": "text",
    }
    records = [
        {**record, "Question_id": "q1", "Image": "ocr/a.jpg", "Task": "Perception", "Subtask": "OCR"},
        {
            **record,
            "Question_id": "q2",
            "Image": "rs/b.jpg",
            "Task": "Perception",
            "Subtask": "Remote Sensing",
        },
        {
            **record,
            "Question_id": "q3",
            "Image": "ad/c.jpg",
            "Task": "Reasoning",
            "Subtask": "Autonomous_Driving",
        },
        {**record, "Question_id": "q4", "Image": "ocr/missing.jpg", "Task": "Perception", "Subtask": "OCR"},
    ]
    for r in records[:3]:
        jpeg(image_root / r["Image"], size=size)
    root.mkdir(parents=True, exist_ok=True)
    (root / "MME-RealWorld-Lite.json").write_text(json.dumps(records))
    return root


def mig_folder(root: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """MIG-Bench: two tasks, two images per record, and a record whose target image is not named."""
    jpeg(root / "img" / "1.jpg", size=size)
    jpeg(root / "img" / "2.jpg", (200, 0, 0), size=size)
    base = {"images": ["img/1.jpg", "img/2.jpg"], "answer": [0.1, 0.2, 0.5, 0.6], "additional_info": None}
    records = [
        {**base, "task": "common_object", "question": "Where is the cup in the second image?"},
        {**base, "task": "diff", "question": "What changed? Ground it in Image-1."},
        {**base, "task": "diff", "question": "Where?"},
    ]
    (root / "MIG_data.json").write_text(json.dumps(records))
    return root


def pixmo_folder(root: Path, size: tuple[int, int] = (64, 48)) -> Path:
    jpeg(root / "images" / "abc123.jpg", size=size)
    row = {"image_url": "http://x", "image_sha256": "abc123", "points": [{"x": 50, "y": 50}], "count": 1}
    (root / "counts.jsonl").write_text(json.dumps({**row, "label": "dogs"}) + "\n{not json\n")
    return root


def fsc147_folder(root: Path, size: tuple[int, int] = (64, 48)) -> Path:
    jpeg(root / "images_384_VarV2" / "1.jpg", size=size)
    annotations = {"1.jpg": {"points": [[1, 2], [3, 4]]}, "2.jpg": {"points": [[1, 1]]}}
    (root / "annotation_FSC147_384.json").write_text(json.dumps(annotations))
    return root
