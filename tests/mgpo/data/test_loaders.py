import base64
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mgpo.boxes import Box
from mgpo.data.check import check_dataset
from mgpo.data.loaders import (
    Problem,
    load_fsc147,
    load_mig_bench,
    load_mme_realworld,
    load_pixmo,
    load_vstar,
    target_image_number,
)
from mgpo.images import ImageStore
from mgpo.records import TaskKind
from tests.layouts import jpeg as _jpeg
from tests.layouts import vstar_folder as _vstar


def _split(items):
    records = [i for i in items if not isinstance(i, Problem)]
    return records, [i for i in items if isinstance(i, Problem)]


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "store")


def test_load_vstar_shuffles_options_seeded_and_keeps_the_right_answer(tmp_path, store):
    records, problems = _split(list(load_vstar(_vstar(tmp_path / "vstar"), store)))
    assert len(records) == 2 and len(problems) == 1 and problems[0].id == "direct_attributes/sa_3"
    first = records[0]
    assert first.choices[ord(first.answer) - 65] == "red"  # the released first option is the right one
    assert first.target_box == Box(10, 5, 30, 35)  # [x, y, w, h] -> corners
    assert first.category == "direct_attributes" and first.kind is TaskKind.MULTIPLE_CHOICE
    again = [r for r in load_vstar(tmp_path / "vstar", store) if not isinstance(r, Problem)]
    assert again[0].choices == first.choices
    answers = {
        r.answer
        for seed in range(12)
        for r in load_vstar(tmp_path / "vstar", store, seed=seed)
        if not isinstance(r, Problem)
    }
    assert len(answers) > 2  # not always "A"


def test_load_vstar_reads_test_questions_jsonl(tmp_path, store):
    root = tmp_path / "v"
    _jpeg(root / "direct_attributes" / "sa_9.jpg")
    lines = [
        {
            "text": "What colour is the cup?\n(A) red\n(B) blue\nAnswer with the option's letter.",
            "image": "direct_attributes/sa_9.jpg",
            "category": "direct_attributes",
            "question_id": 0,
            "label": "B",
        },
        {
            "text": "Broken?\n(A) x",
            "image": "direct_attributes/sa_9.jpg",
            "category": "x",
            "question_id": 1,
            "label": "C",
        },
    ]
    (root / "test_questions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    records, problems = _split(list(load_vstar(root, store)))
    assert (
        records[0].question == "What colour is the cup?"
        and records[0].choices == ("red", "blue")
        and records[0].answer == "B"
    )
    assert {p.id for p in problems} == {"1", "line 3"}


def test_load_mme_realworld_json_and_parquet(tmp_path, store):
    root = tmp_path / "mme"
    _jpeg(root / "images" / "a.jpg")
    records = [
        {
            "Question_id": "q1",
            "Question Type": "Multiple Choice",
            "Image": "images/a.jpg",
            "Text": "What?",
            "Answer choices": ["(A) one", "(B) two", "(C) three", "(D) four", "(E) five"],
            "Ground truth": "C",
            "Task": "Perception",
            "Subtask": "OCR with Complex Context",
            "Category": "text",
        },
        {
            "Question_id": "q2",
            "Image": "images/missing.jpg",
            "Text": "?",
            "Answer choices": ["(A) a"],
            "Ground truth": "A",
        },
        {
            "Question_id": "q3",
            "Image": "images/a.jpg",
            "Text": "?",
            "Answer choices": ["(A) a"],
            "Ground truth": "Z",
        },
    ]
    (root / "MME_RealWorld_Lite.json").write_text(json.dumps(records))
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, format="PNG")
    table = pa.table(
        {
            "index": [7],
            "question": ["Which?"],
            "multi-choice options": [["(A) x", "(B) y"]],
            "answer": ["B"],
            "category": ["cat"],
            "l2-category": ["l2"],
            "bytes": [base64.b64encode(buf.getvalue()).decode()],
        }
    )
    (root / "data").mkdir()
    pq.write_table(table, root / "data" / "part-0.parquet")
    got, problems = _split(list(load_mme_realworld(root, store)))
    assert [r.id for r in got] == ["q1", "7"]
    assert got[0].choices == ("one", "two", "three", "four", "five") and got[0].answer == "C"
    assert got[0].category == "Perception/OCR with Complex Context/text"
    assert got[1].choices == ("x", "y") and got[1].answer == "B" and got[1].category == "l2/cat"
    assert {p.id for p in problems} == {"q2", "q3"}
    assert "missing" in next(p.reason for p in problems if p.id == "q2")


def test_target_image_number_reads_ordinals_and_numbers():
    assert target_image_number("Find it in the second image.") == 2
    assert target_image_number("Ground the cup in Image-3") == 3
    assert target_image_number("nothing here", "see the first image") == 1
    assert target_image_number("no target") is None


def test_load_mig_bench_reads_tasks_and_rejects_unnamed_targets(tmp_path, store):
    root = tmp_path / "mig"
    _jpeg(root / "img" / "1.jpg")
    _jpeg(root / "img" / "2.jpg", (200, 0, 0))
    records = [
        {
            "task": "common_object",
            "images": ["img/1.jpg", "img/2.jpg"],
            "question": "Where is the cup of <|box_start|>(10,10),(200,200)<|box_end|> in the second image?",
            "answer": [0.1, 0.2, 0.5, 0.6],
            "additional_info": None,
            "need_format": True,
        },
        {
            "task": "diff",
            "images": ["img/1.jpg", "img/2.jpg"],
            "question": "Where?",
            "answer": [0.1, 0.2, 0.5, 0.6],
        },
        {
            "task": "diff",
            "images": ["img/1.jpg", "img/2.jpg"],
            "question": "In image 1?",
            "answer": [0.5, 0.2, 0.1, 0.6],
        },
    ]
    (root / "MIG_data.json").write_text(json.dumps(records))
    got, problems = _split(list(load_mig_bench(root, store)))
    assert len(got) == 1 and got[0].answer == "2" and got[0].target_box == Box(0.1, 0.2, 0.5, 0.6)
    assert got[0].kind is TaskKind.MULTI_IMAGE_GROUNDING and len(got[0].images) == 2
    assert [p.id for p in problems] == ["diff-1", "diff-2"]


def test_load_pixmo_converts_percent_points_to_pixels(tmp_path, store):
    root = tmp_path / "pixmo"
    _jpeg(root / "images" / "abc123.jpg", size=(200, 100))
    rows = [
        {
            "image_url": "http://x",
            "image_sha256": "abc123",
            "points": [{"x": 50, "y": 50}, {"x": 10, "y": 20}],
            "count": 2,
            "label": "dogs",
        },
        {"image_url": "http://x", "image_sha256": "missing", "points": [], "count": 0, "label": "cats"},
    ]
    (root / "counts.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    got, problems = _split(list(load_pixmo(root, store)))
    assert (
        got[0].answer == "2"
        and got[0].points == ((100.0, 50.0), (20.0, 20.0))
        and got[0].question == "How many dogs are in the image?"
    )
    assert len(problems) == 1 and "fetch it from image_url" in problems[0].reason


def test_load_fsc147_counts_points_and_names_classes(tmp_path, store):
    root = tmp_path / "fsc"
    _jpeg(root / "images_384_VarV2" / "1.jpg")
    annotations = {
        "1.jpg": {"H": 48, "W": 64, "points": [[1, 2], [3, 4], [5, 6]], "box_examples_coordinates": []},
        "2.jpg": {"points": [[1, 1]]},
    }
    (root / "annotation_FSC147_384.json").write_text(json.dumps(annotations))
    (root / "Train_Test_Val_FSC_147.json").write_text(json.dumps({"train": ["1.jpg"], "test": ["2.jpg"]}))
    (root / "ImageClasses_FSC147.txt").write_text("1.jpg\tapples\n2.jpg\tpens\n")
    got, problems = _split(list(load_fsc147(root, store)))
    assert got[0].answer == "3" and got[0].question == "How many apples are in the image?"
    assert problems[0].id == "2.jpg"
    assert [r.id for r in load_fsc147(root, store, split="train")] == ["1.jpg"]


def test_check_dataset_summarises_and_lists_problems(tmp_path):
    summary = check_dataset("vstar", _vstar(tmp_path / "vstar"))
    assert summary["count"] == 2 and summary["problems"] == 1 and not summary["ok"]
    assert summary["categories"] == {"direct_attributes": 1, "relative_position": 1}
    assert summary["problem_list"][0]["id"] == "direct_attributes/sa_3"


def test_check_dataset_reports_a_corrupt_image_by_record(tmp_path):
    root = _vstar(tmp_path / "vstar")
    (root / "relative_position" / "sa_2.jpg").write_bytes(b"\xff\xd8\xff truncated")
    summary = check_dataset("vstar", root)
    assert summary["count"] == 1
    assert any(
        p["id"] == "relative_position/sa_2" and "corrupt" in p["problem"] for p in summary["problem_list"]
    )
