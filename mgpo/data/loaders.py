"""Readers for the published benchmark layouts (../shared/docs/formats.md), all yielding PromptRecords.

Each loader yields a `PromptRecord` per usable record and a `Problem` (record id + reason) per malformed one,
so one bad record never stops a dataset. Images are copied into an ImageStore and referenced by hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mgpo.boxes import Box
from mgpo.images import ImageError, ImageStore, decode_image
from mgpo.records import PromptRecord, TaskKind
from mgpo.templates import LETTERS


class Problem(NamedTuple):
    id: str
    reason: str


Loaded = PromptRecord | Problem
_OPTION = re.compile(r"^\s*\(([A-Z])\)\s*(.*)$")
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6}
_ORDINAL_IMAGE = re.compile(r"\b(first|second|third|fourth|fifth|sixth)\s+image\b", re.IGNORECASE)
_NUMBERED_IMAGE = re.compile(r"\bimage[\s\-_]*([1-6])\b", re.IGNORECASE)


def _shuffle(options: list[str], key: str, seed: int) -> tuple[tuple[str, ...], str]:
    """Options in a seeded order and the letter of options[0] (V* lists the right answer first)."""
    digest = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")
    order = np.random.default_rng(digest).permutation(len(options))
    return tuple(options[i] for i in order), LETTERS[int(np.where(order == 0)[0][0])]


def _strip_option(text: str) -> str:
    match = _OPTION.match(text)
    return match.group(2).strip() if match else text.strip()


def _store_file(store: ImageStore, path: Path) -> str:
    if not path.is_file():
        raise ImageError(f"image file {path} is missing")
    return store.put_file(path)


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable JSON: {err}") from err


def _json_mapping(path: Path, what: str) -> dict[str, Any]:
    value = _json_file(path)
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object mapping {what}, got a {type(value).__name__}")
    return value


def _vstar_record(meta_path: Path, category: str, store: ImageStore, seed: int) -> Loaded:
    qid = f"{category}/{meta_path.stem}"
    try:
        meta = _json_file(meta_path)
        options = [str(o) for o in meta["options"]]
        if len(options) < 2:
            return Problem(qid, "fewer than two options")
        image_path = next(
            (p for p in meta_path.parent.glob(meta_path.stem + ".*") if p.suffix != ".json"), None
        )
        if image_path is None:
            return Problem(qid, "no image beside the json")
        boxes = [Box(x, y, x + w, y + h) for x, y, w, h in meta.get("bbox", [])]
        union = (
            Box(
                min(b.x1 for b in boxes),
                min(b.y1 for b in boxes),
                max(b.x2 for b in boxes),
                max(b.y2 for b in boxes),
            )
            if boxes
            else None
        )
        choices, answer = _shuffle(options, qid, seed)
        image = _store_file(store, image_path)
    except ImageError as err:
        return Problem(qid, str(err))
    except (KeyError, TypeError, ValueError) as err:
        return Problem(qid, f"malformed record: {err!r}")
    return PromptRecord(
        qid,
        TaskKind.MULTIPLE_CHOICE,
        str(meta["question"]),
        (image,),
        answer,
        choices,
        union,
        category=category,
        source="vstar",
    )


def _vstar_line(line: dict[str, Any], root: Path, store: ImageStore) -> Loaded:
    qid = str(line.get("question_id", "?"))
    try:
        lines = str(line["text"]).splitlines()
        options = [(m.group(1), m.group(2).strip()) for m in map(_OPTION.match, lines) if m]
        question = "\n".join(x for x in lines if not _OPTION.match(x)).strip().splitlines()[0]
        letters = [letter for letter, _ in options]
        label = str(line["label"]).strip("() ").upper()
        if label not in letters:
            return Problem(qid, f"label {label!r} is not one of the options {letters}")
        image = _store_file(store, root / str(line["image"]))
    except ImageError as err:
        return Problem(qid, str(err))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return Problem(qid, f"malformed record: {err!r}")
    choices = tuple(text for _, text in options)
    return PromptRecord(
        qid,
        TaskKind.MULTIPLE_CHOICE,
        question,
        (image,),
        label,
        choices,
        category=str(line.get("category", "")),
        source="vstar",
    )


def vstar_shuffles(root: str | os.PathLike[str]) -> bool:
    """Whether load_vstar reads the per-image jsons (whose options it shuffles) rather than test_questions.jsonl."""
    return any(Path(root).glob("*/*.json"))


def load_vstar(root: str | os.PathLike[str], store: ImageStore, seed: int = 0) -> Iterator[Loaded]:
    """V* Bench: per-image `sa_N.json` in category folders (options shuffled, seeded), else test_questions.jsonl."""
    root = Path(root)
    metas = sorted(p for p in root.glob("*/*.json"))
    if metas:
        for meta_path in metas:
            yield _vstar_record(meta_path, meta_path.parent.name, store, seed)
        return
    questions = root / "test_questions.jsonl"
    if not questions.exists():
        raise FileNotFoundError(f"{root}: no <category>/*.json and no test_questions.jsonl: not a V* folder")
    for number, raw in enumerate(questions.read_text().splitlines(), 1):
        if raw.strip():
            try:
                line = json.loads(raw)
            except ValueError as err:
                yield Problem(f"line {number}", f"not JSON: {err}")
                continue
            yield (
                _vstar_line(line, root, store)
                if isinstance(line, dict)
                else Problem(f"line {number}", "not an object")
            )


def _mme_key(record: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in record:
            return record[name]
    raise KeyError(names[0])


def image_roots(folder: Path, image_root: str | os.PathLike[str] | None = None) -> tuple[Path, ...]:
    """Where an MME-RealWorld `Image` path may be relative to: the given root, then the usual unpackings (the
    JSON's own folder, its parent, and their images/ or imgs/ folders)."""
    usual = (folder, folder / "images", folder / "imgs", folder.parent, folder.parent / "images")
    roots = ((Path(image_root),) if image_root is not None else ()) + usual
    return tuple(dict.fromkeys(roots))  # the order kept, duplicates dropped


def _find_image(relative: str, roots: tuple[Path, ...]) -> Path:
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    looked = ", ".join(str(r) for r in roots)
    raise ImageError(f"image {relative} not found; looked in {looked} (pass --image-root)")


def _mme_record(record: dict[str, Any], roots: tuple[Path, ...], store: ImageStore) -> Loaded:
    qid = str(record.get("Question_id", record.get("index", "?")))
    try:
        choices = tuple(_strip_option(str(c)) for c in _mme_key(record, "Answer choices", "Answer Choices"))
        answer = str(_mme_key(record, "Ground truth", "Ground Truth")).strip("() ").upper()
        if answer not in LETTERS[: len(choices)]:
            return Problem(qid, f"ground truth {answer!r} is not one of {len(choices)} options")
        image = _store_file(store, _find_image(str(record["Image"]), roots))
        category = "/".join(str(record.get(k, "")) for k in ("Task", "Subtask", "Category"))
    except ImageError as err:
        return Problem(qid, str(err))
    except (KeyError, TypeError, ValueError) as err:
        return Problem(qid, f"malformed record: missing or bad {err!r}")
    return PromptRecord(
        qid,
        TaskKind.MULTIPLE_CHOICE,
        str(record["Text"]),
        (image,),
        answer,
        choices,
        category=category,
        source="mme-realworld",
    )


def _mme_parquet_row(row: dict[str, Any], store: ImageStore) -> Loaded:
    qid = str(row.get("index", "?"))
    try:
        options = row["multi-choice options"]
        options = json.loads(options) if isinstance(options, str) else list(options)
        choices = tuple(_strip_option(str(c)) for c in options)
        answer = str(row["answer"]).strip("() ").upper()
        if answer not in LETTERS[: len(choices)]:
            return Problem(qid, f"answer {answer!r} is not one of {len(choices)} options")
        raw = row["bytes"]
        data = base64.b64decode(raw, validate=True) if isinstance(raw, str) else bytes(raw)
        image = store.put_bytes(data)
    except ImageError as err:
        return Problem(qid, str(err))
    except (KeyError, TypeError, ValueError) as err:
        return Problem(qid, f"malformed row: {err!r}")
    category = f"{row.get('l2-category', '')}/{row.get('category', '')}"
    return PromptRecord(
        qid,
        TaskKind.MULTIPLE_CHOICE,
        str(row["question"]),
        (image,),
        answer,
        choices,
        category=category,
        source="mme-realworld",
    )


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=64):
        yield from batch.to_pylist()


def load_mme_realworld(
    root: str | os.PathLike[str], store: ImageStore, image_root: str | os.PathLike[str] | None = None
) -> Iterator[Loaded]:
    """MME-RealWorld / -Lite: JSON lists of records, or parquet files. A record's `Image` is relative to an
    image root that is not always the JSON's folder: `image_root` first, then the usual places."""
    root = Path(root)
    roots = image_roots(root, image_root)
    lists = sorted(root.glob("*.json"))
    parquets = sorted(root.rglob("*.parquet"))
    if not lists and not parquets:
        raise FileNotFoundError(f"{root}: no *.json list and no *.parquet: not an MME-RealWorld folder")
    for path in lists:
        records = _json_file(path)
        if not isinstance(records, list):
            yield Problem(path.name, "top level is not a list of records")
            continue
        for record in records:
            yield (
                _mme_record(record, roots, store)
                if isinstance(record, dict)
                else Problem(path.name, "record is not an object")
            )
    for path in parquets:
        for row in _parquet_rows(path):
            yield _mme_parquet_row(row, store)


def target_image_number(question: str, additional_info: str = "") -> int | None:
    """The 1-based target image named in MIG-Bench text ("the second image", "Image-2"), if any."""
    for text in (additional_info, question):
        ordinal = _ORDINAL_IMAGE.search(text)
        if ordinal:
            return _ORDINALS[ordinal.group(1).lower()]
        numbered = _NUMBERED_IMAGE.search(text)
        if numbered:
            return int(numbered.group(1))
    return None


def _mig_record(index: int, record: dict[str, Any], root: Path, store: ImageStore) -> Loaded:
    qid = f"{record.get('task', 'mig')}-{index}"
    try:
        paths = [str(p) for p in record["images"]]
        if not 2 <= len(paths) <= 6:
            return Problem(qid, f"{len(paths)} images, expected 2-6")
        x1, y1, x2, y2 = (float(v) for v in record["answer"])
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            return Problem(qid, f"answer box {record['answer']} is not a normalised 0-1 box")
        target = target_image_number(str(record["question"]), str(record.get("additional_info") or ""))
        if target is None or target > len(paths):
            return Problem(qid, "the target image is not named in the question or additional_info")
        images = tuple(_store_file(store, root / p) for p in paths)
    except ImageError as err:
        return Problem(qid, str(err))
    except (KeyError, TypeError, ValueError) as err:
        return Problem(qid, f"malformed record: {err!r}")
    return PromptRecord(
        qid,
        TaskKind.MULTI_IMAGE_GROUNDING,
        str(record["question"]),
        images,
        str(target),
        target_box=Box(x1, y1, x2, y2),
        category=str(record.get("task", "")),
        source="mig-bench",
    )


def load_mig_bench(root: str | os.PathLike[str], store: ImageStore) -> Iterator[Loaded]:
    """MIG-Bench: one JSON list of records; image paths relative to `root`."""
    root = Path(root)
    lists = sorted(root.glob("*.json"))
    if not lists:
        raise FileNotFoundError(f"{root}: no *.json list: not a MIG-Bench folder")
    for path in lists:
        records = _json_file(path)
        for index, record in enumerate(records if isinstance(records, list) else []):
            yield (
                _mig_record(index, record, root, store)
                if isinstance(record, dict)
                else Problem(f"{path.name}:{index}", "not an object")
            )


def _pixmo_row(row: dict[str, Any], root: Path, store: ImageStore) -> Loaded:
    qid = str(row.get("image_sha256", "?"))[:16]
    try:
        digest = str(row["image_sha256"])
        found = sorted((root / "images").glob(digest + "*"))
        if not found:
            return Problem(qid, f"image {digest} not found under images/ (fetch it from image_url first)")
        data = found[0].read_bytes()
        image = decode_image(data)
        image_hash = store.put_bytes(data, check=False)
        raw_points = row.get("points") or []
        # Pixmo points are percentages (0-100) of the image's width and height.
        points = tuple(
            (float(p["x"]) / 100 * image.width, float(p["y"]) / 100 * image.height) for p in raw_points
        )
        count = int(row["count"]) if row.get("count") is not None else len(points)
    except ImageError as err:
        return Problem(qid, str(err))
    except (KeyError, TypeError, ValueError) as err:
        return Problem(qid, f"malformed row: {err!r}")
    label = str(row.get("label", "objects"))
    return PromptRecord(
        qid,
        TaskKind.COUNTING,
        f"How many {label} are in the image?",
        (image_hash,),
        str(count),
        points=points,
        category=label,
        source="pixmo",
    )


def load_pixmo(root: str | os.PathLike[str], store: ImageStore) -> Iterator[Loaded]:
    """Pixmo-Points / Pixmo-Count rows (*.jsonl or *.parquet) with images saved as images/<image_sha256>.*"""
    root = Path(root)
    files = sorted(root.glob("*.jsonl")) + sorted(root.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{root}: no *.jsonl or *.parquet rows: not a Pixmo folder")
    for path in files:
        if path.suffix == ".parquet":
            rows: Iterator[dict[str, Any]] = _parquet_rows(path)
        else:
            rows = (json.loads(x) for x in path.read_text().splitlines() if x.strip())
        try:
            for row in rows:
                yield _pixmo_row(row, root, store)
        except ValueError as err:
            yield Problem(path.name, f"unreadable row: {err}")


def load_fsc147(
    root: str | os.PathLike[str], store: ImageStore, split: str | None = None
) -> Iterator[Loaded]:
    """FSC-147: annotation_FSC147_384.json (+ split file, + class names), images in images_384_VarV2/."""
    root = Path(root)
    annotations_path = root / "annotation_FSC147_384.json"
    if not annotations_path.exists():
        raise FileNotFoundError(f"{root}: no annotation_FSC147_384.json: not an FSC-147 folder")
    annotations = _json_mapping(annotations_path, "image names to annotations")
    names = sorted(annotations)
    splits_path = root / "Train_Test_Val_FSC_147.json"
    if split is not None:
        names = [
            n for n in names if n in set(_json_mapping(splits_path, "splits to image names").get(split, []))
        ]
    classes: dict[str, str] = {}
    classes_path = root / "ImageClasses_FSC147.txt"
    if classes_path.exists():
        for line in classes_path.read_text().splitlines():
            if "\t" in line:
                name, label = line.split("\t", 1)
                classes[name.strip()] = label.strip()
    for name in names:
        try:
            points = tuple((float(x), float(y)) for x, y in annotations[name]["points"])
            image = _store_file(store, root / "images_384_VarV2" / name)
        except ImageError as err:
            yield Problem(name, str(err))
            continue
        except (KeyError, TypeError, ValueError) as err:
            yield Problem(name, f"malformed annotation: {err!r}")
            continue
        label = classes.get(name, "objects")
        yield PromptRecord(
            name,
            TaskKind.COUNTING,
            f"How many {label} are in the image?",
            (image,),
            str(len(points)),
            points=points,
            category=label,
            source="fsc147",
        )


def load_synthetic(root: str | os.PathLike[str], store: ImageStore) -> Iterator[Loaded]:
    """Our own folder layout (mgpo data synth): records are checked against the images they name."""
    from mgpo.data.dataset import open_store, read_prompts

    source = open_store(root)
    for record in read_prompts(root):
        missing = [h for h in record.images if h not in source]
        if missing:
            yield Problem(record.id, f"image {missing[0]} is not in {source.root}")
            continue
        try:
            for digest in record.images:
                store.put_bytes(source.path(digest).read_bytes())
        except ImageError as err:
            yield Problem(record.id, str(err))
            continue
        yield record


LOADERS: dict[str, Callable[[str | os.PathLike[str], ImageStore], Iterator[Loaded]]] = {
    "synthetic": load_synthetic,
    "vstar": load_vstar,
    "mme-realworld": load_mme_realworld,
    "mig-bench": load_mig_bench,
    "pixmo": load_pixmo,
    "fsc147": load_fsc147,
}
