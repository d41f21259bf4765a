"""Evaluation numbers and the report, on hand-made rows and a run folder written by the real MetricsLog."""

import json

import numpy as np
import pytest
from PIL import Image

from mgpo.boxes import Box
from mgpo.images import ImageStore
from mgpo.records import PromptRecord, TaskKind, TrajectoryGroup, TrajectorySample, View
from mgpo.resize import PixelBudget
from recipes.evaluate import row, summarize
from recipes.report import smooth, write_report
from runtime.metrics_log import MetricsLog


def _row(correct, valid, crop, iou, alone=None, holds=False, category="c", crops=None, deeper=0, tokens=64):
    r = {"correct": correct, "valid_grounding": valid, "crop": crop, "iou": iou, "crop_holds_target": holds}
    crops = int(crop is not None) if crops is None else crops
    r |= {"category": category, "crops": crops, "direct": crops == 0, "crop_of_crops": deeper}
    r["image_tokens"] = tokens * (1 + crops)
    r["valid_grounding_lenient"] = valid or crop is None  # the lenient rule read a box the strict one refused
    if alone is not None:
        r["crop_alone_correct"] = alone
    return r


def test_summarize_counts_invalid_boxes_as_zero_iou_and_failed_crops():
    rows = [
        _row(True, True, [0, 0, 10, 10], 0.5, True, holds=True),
        _row(False, True, [0, 0, 10, 10], 0.1, False),
        _row(True, False, None, 0.0, False),
        _row(False, False, None, 0.0, False),
    ]
    result = summarize(rows)
    assert result["accuracy"] == 0.5 and result["valid_grounding_ratio"] == 0.5
    assert result["valid_grounding_lenient_ratio"] == 1.0
    assert result["mean_iou_valid"] == pytest.approx(0.3) and result["mean_iou_all"] == pytest.approx(0.15)
    assert result["crop_alone_ratio"] == 0.25 and result["crop_holds_target_ratio"] == 0.25
    assert "crop_alone_ratio" not in summarize([_row(True, False, None, 0.0)])
    assert result["crops_per_question"] == 0.5 and result["direct_answer_ratio"] == 0.5
    assert result["image_tokens_per_question"] == 96 and "categories" not in result


def test_summarize_reports_looks_per_category():
    rows = [
        _row(True, True, None, 0.0, category="look0"),
        _row(False, True, None, 0.0, category="look0"),
        _row(True, True, [0, 0, 10, 10], 0.2, category="look2", crops=2, deeper=1),
    ]
    result = summarize(rows)
    assert result["crops_per_question"] == pytest.approx(2 / 3) and result["crop_of_crop_ratio"] == 0.5
    look0, look2 = result["categories"]["look0"], result["categories"]["look2"]
    assert (look0["questions"], look0["accuracy"], look0["direct_answer_ratio"]) == (2, 0.5, 1.0)
    assert (look2["crops_per_question"], look2["image_tokens_per_question"]) == (2.0, 192.0)
    assert "categories" not in look2


def test_a_row_keeps_every_crop_and_whether_the_last_one_held_the_target(tmp_path):
    store = ImageStore(tmp_path)
    image = store.put_image(Image.new("RGB", (2048, 2048)))
    panel, tag, beside = Box(1024, 0, 1536, 512), Box(1296, 272, 1392, 368), Box(1280, 384, 1408, 512)
    record = PromptRecord("q", TaskKind.MULTIPLE_CHOICE, "?", (image,), "A", ("a", "b"), target_box=tag)

    def looked(*regions: Box) -> dict:
        views = (View(image), *(View(image, r) for r in regions))
        empty = np.zeros(0, np.int32)
        sample = TrajectorySample(
            empty, empty.astype(bool), empty.astype(np.float32), views, 1.0, True, len(views), "stop"
        )
        group = TrajectoryGroup("g", "q", 0, (sample,), 50176, 50176)
        return row(record, group, store, PixelBudget(50176, 50176))

    twice = looked(panel, Box(1280, 256, 1408, 384))
    assert twice["regions"] == [list(panel), [1280, 256, 1408, 384]] and twice["crop"] == list(panel)
    assert twice["crop_holds_target"] and twice["last_crop_holds_target"]
    missed = looked(panel, beside)  # the first crop held the tag, the second cut beside it
    assert missed["crop_holds_target"] and not missed["last_crop_holds_target"]
    direct = looked()
    assert direct["regions"] == [] and not direct["last_crop_holds_target"] and direct["direct"]


def test_smooth_is_a_trailing_average():
    assert smooth([0, 1, 2, 3], window=2) == [0, 0.5, 1.5, 2.5]


def test_the_report_draws_curves_and_tabulates_evals(tmp_path):
    run = tmp_path / "mgpo-run"
    run.mkdir()
    (run / "config.yaml").write_text("name: mgpo-run\nrollout: {mode: mgpo}\n")
    log = MetricsLog(run)
    for step in range(1, 6):
        log.write(
            step, "step", {"accuracy": step / 10, "valid_grounding_ratio": step / 5, "reward": step / 10}
        )
    log.close()
    (run / "final").mkdir()
    (run / "final" / "eval-mgpo.json").write_text(
        json.dumps({"mode": "mgpo", "accuracy": 0.8, "valid_grounding_ratio": 0.95, "mean_iou_valid": 0.2})
    )
    out = write_report([str(run)], str(tmp_path / "report"))
    assert (tmp_path / "report" / "curves.png").stat().st_size > 10_000
    lines = (tmp_path / "report" / "curves.csv").read_text().splitlines()
    assert lines[0] == "run,step,accuracy,valid_grounding_ratio,reward" and len(lines) == 6
    table = (tmp_path / "report" / "results.md").read_text()
    assert "| mgpo-run (mgpo) | final | mgpo | 0.800 | 0.950 | 0.200 | - | - | - |" in table
    assert out["curves"].endswith("curves.png")


def test_the_seeds_table_has_a_row_per_seed_and_dashes_for_what_is_missing():
    from recipes.reproduce import seeds_table

    rows = [
        {
            "seed": 0,
            "mgpo_valid_start": 0.04,
            "mgpo_valid_end": 0.98,
            "mgpo_test_final": 0.6,
            "grpo_test_final": 0.3,
            "mgpo_minus_grpo": 0.3,
        },
        {"seed": 1, "mgpo_valid_start": 0.5},
    ]
    table = seeds_table(rows).splitlines()
    assert len(table) == 4 and table[0].startswith("| seed | MGPO valid, first 10 steps")
    assert table[2] == "| 0 | 0.04 | 0.98 | - | 0.60 | 0.30 | 0.30 |"
    assert table[3] == "| 1 | 0.50 | - | - | - | - | - |"
