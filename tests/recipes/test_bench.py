"""`mgpo eval --bench`: the scoring rules on hand-made rows, and each published layout end to end with the
tiny model (HF engine; a malformed record is skipped with its id, the run goes on)."""

import json

import pytest

from mgpo.records import TaskKind
from recipes.bench import natural_mode, results
from services.cli import main
from tests.layouts import fsc147_folder, mig_folder, mme_folder, pixmo_folder, vstar_folder

SIZE = (320, 240)  # small images: the tiny model's budget enlarges them


def _row(category, correct, valid=False, iou=0.0):
    return {
        "category": category,
        "correct": correct,
        "valid_grounding": valid,
        "valid_grounding_lenient": valid,
        "iou": iou,
    }


def test_mme_realworld_scores_per_task_and_subtask_with_a_micro_average_overall():
    rows = [
        _row("Perception/OCR/text", True, valid=True),
        _row("Perception/OCR/text", False),
        _row("Perception/Remote Sensing/x", True),
        _row("Reasoning/Autonomous_Driving/y", False),
    ]
    table = results("mme-realworld", rows, TaskKind.MULTIPLE_CHOICE)
    assert table["mme-realworld"]["accuracy,none"] == 0.5 and table["mme-realworld"]["samples"] == 4
    assert table["mme-realworld"]["valid_grounding_ratio,none"] == 0.25
    assert table["mme-realworld_Perception"]["accuracy,none"] == pytest.approx(2 / 3)
    assert table["mme-realworld_Perception/OCR"]["accuracy,none"] == 0.5
    assert table["mme-realworld_Reasoning/Autonomous_Driving"]["samples"] == 1
    assert list(table)[0] == "mme-realworld"  # the overall line first, as lmms-eval writes it


def test_mig_bench_overall_is_the_unweighted_mean_of_its_tasks():
    rows = [
        _row("diff", True, iou=0.6),
        _row("diff", True, iou=0.7),
        _row("diff", False),
        _row("region", False),
    ]
    table = results("mig-bench", rows, TaskKind.MULTI_IMAGE_GROUNDING)
    assert table["mig-bench_diff"]["accuracy,none"] == pytest.approx(2 / 3)
    assert table["mig-bench"]["accuracy,none"] == pytest.approx((2 / 3 + 0) / 2)
    assert table["mig-bench"]["micro_accuracy,none"] == 0.5
    assert table["mig-bench"]["mean_iou,none"] == pytest.approx(1.3 / 4)


def test_each_task_runs_in_its_natural_mode():
    assert natural_mode(TaskKind.MULTIPLE_CHOICE) == "mgpo"
    assert natural_mode(TaskKind.MULTI_IMAGE_GROUNDING) == natural_mode(TaskKind.COUNTING) == "single"


def _bench(tmp_path, model, bench, folder, *extra):
    out = tmp_path / f"{bench}.json"
    code = main(["eval", "--bench", bench, str(folder), "--model", str(model), "--out", str(out), *extra])
    assert code == 0
    result = json.loads(out.read_text())
    samples = [json.loads(x) for x in (tmp_path / f"{bench}_samples_{bench}.jsonl").read_text().splitlines()]
    return result, samples


def test_vstar_folder_end_to_end_with_shuffled_options_and_a_skipped_record(tmp_path, tiny_small, capsys):
    result, samples = _bench(tmp_path, tiny_small, "vstar", vstar_folder(tmp_path / "vstar", SIZE))
    table = result["results"]
    assert set(table) == {"vstar", "vstar_direct_attributes", "vstar_relative_position"}
    assert table["vstar"]["samples"] == 2 and 0.0 <= table["vstar"]["accuracy,none"] <= 1.0
    assert (
        "valid_grounding_ratio,none" in table["vstar"]
        and "valid_grounding_lenient_ratio,none" in table["vstar"]
    )
    assert result["config"]["options_shuffled"] is True and result["config"]["mode"] == "mgpo"
    assert result["skipped"][0]["id"] == "direct_attributes/sa_3"
    assert result["n-samples"]["vstar"] == {"original": 3, "effective": 2}
    assert (
        samples[0]["doc"]["id"] == "direct_attributes/sa_1" and len(samples[0]["resps"][0]) == 2
    )  # two turns
    assert "skipped direct_attributes/sa_3" in capsys.readouterr().out


def test_mme_realworld_images_are_found_under_another_root(tmp_path, tiny_small, capsys):
    folder = mme_folder(tmp_path / "mme" / "json", tmp_path / "mme" / "images", SIZE)
    # the usual places include the JSON folder's parent's images/: found without --image-root
    result, samples = _bench(tmp_path, tiny_small, "mme-realworld", folder, "--limit", "2")
    assert result["results"]["mme-realworld"]["samples"] == 2 and len(samples) == 2
    skipped = result["skipped"]
    assert [s["id"] for s in skipped] == ["q4"] and "looked in" in skipped[0]["reason"]
    # elsewhere: only --image-root finds them
    moved = mme_folder(tmp_path / "other" / "json", tmp_path / "pictures", SIZE)
    result, _ = _bench(
        tmp_path,
        tiny_small,
        "mme-realworld",
        moved,
        "--image-root",
        str(tmp_path / "pictures"),
        "--limit",
        "3",
    )
    assert set(result["results"]) >= {"mme-realworld_Perception", "mme-realworld_Perception/OCR"}


def test_mme_realworld_with_no_image_anywhere_is_a_clear_error(tmp_path, tiny_small, capsys):
    moved = mme_folder(tmp_path / "other" / "json", tmp_path / "pictures", SIZE)
    out = tmp_path / "x.json"
    code = main(
        ["eval", "--bench", "mme-realworld", str(moved), "--model", str(tiny_small), "--out", str(out)]
    )
    err = capsys.readouterr()
    assert code == 2 and "no usable mme-realworld record (4 skipped)" in err.err
    assert "looked in" in err.out and "pass --image-root" in err.out


def test_mig_bench_folder_end_to_end_in_one_turn(tmp_path, tiny_small):
    result, samples = _bench(tmp_path, tiny_small, "mig-bench", mig_folder(tmp_path / "mig", SIZE))
    table = result["results"]
    assert result["config"]["mode"] == "single" and set(table) == {
        "mig-bench",
        "mig-bench_common_object",
        "mig-bench_diff",
    }
    assert "mean_iou,none" in table["mig-bench"] and len(samples[0]["resps"][0]) == 1
    assert [s["id"] for s in result["skipped"]] == ["diff-2"]


@pytest.mark.parametrize(("bench", "build"), [("pixmo", pixmo_folder), ("fsc147", fsc147_folder)])
def test_counting_folders_end_to_end(tmp_path, tiny_small, bench, build):
    result, samples = _bench(tmp_path, tiny_small, bench, build(tmp_path / bench, SIZE))
    assert list(result["results"]) == [bench] and result["results"][bench]["samples"] == 1
    assert samples[0]["target"] in ("1", "2") and len(result["skipped"]) == 1


def test_a_mode_that_does_not_fit_the_benchmark_is_refused(tmp_path, tiny_small, capsys):
    folder = mig_folder(tmp_path / "mig", SIZE)
    code = main(["eval", "--bench", "mig-bench", str(folder), "--model", str(tiny_small), "--mode", "mgpo"])
    assert code == 2 and "--mode mgpo does not apply, use single" in capsys.readouterr().err
