"""The prepared GPU script, run on the CPU with a narrow model: it builds the 7B's shape, steps with the KL
reference beside the policy, and reports what a GPU run would (memory fields stay empty on a CPU)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_the_gpu_learner_script_runs_its_whole_step_on_a_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    args = "--device cpu --layers 1 --vision-layers 1 --hidden 256 --samples 2 --micro-batch 1 --tokens 320"
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu_learner.py",
            *args.split(),
            "--generated",
            "32",
            "--steps",
            "1",
            "--kl",
            "--checkpointing",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["tokens_per_second"] > 0 and report["step_seconds"] > 0
    assert report["settings"]["kl"] and report["peak_memory_gib"] is None  # no CUDA here
    assert 0 < report["plan_activations_and_logits_gib"] < 1
