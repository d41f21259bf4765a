import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
MGPO = str(Path(sys.executable).with_name("mgpo"))


def test_mgpo_rollout_cli_reports_accuracy_grounding_and_throughput(box_model, synth_data, tmp_path):
    out = tmp_path / "groups.jsonl"
    args = ["rollout", "--model", str(box_model), "--data", str(synth_data), "--mode", "mgpo", "--n", "2"]
    args += [
        "--out",
        str(out),
        "--engine",
        "hf",
        "--temperature",
        "0",
        "--limit",
        "1",
        "--max-turn-tokens",
        "48",
    ]
    result = subprocess.run([MGPO, *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    # the taught prompt, greedy: a valid box and the right letter in both samples
    assert summary["groups"] == 1 and summary["samples"] == 2
    assert summary["accuracy"] == 1.0 and summary["valid_grounding_ratio"] == 1.0 and summary["turns"] == 2.0
    assert summary["tokens_per_s"] > 0
    line = json.loads(out.read_text().splitlines()[0])
    assert line["samples"][0]["views"][1]["region"] is not None
