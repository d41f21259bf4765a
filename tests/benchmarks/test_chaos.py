"""The chaos benchmark's small version (README, What is guaranteed): Redis and the driver SIGKILLed in a real
run, then the ledger holds every prompt exactly once, and a Redis restart does not stop the run. Actor and
learner kills are covered by tests/services/driver/test_train.py; the full table (20 trials, every target) is
benchmarks/chaos.py's."""

import importlib.util
import random
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SPEC = importlib.util.spec_from_file_location(
    "chaos", Path(__file__).resolve().parents[2] / "benchmarks" / "chaos.py"
)
chaos = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(chaos)


@pytest.mark.parametrize("target", ["redis", "driver"])
def test_a_run_killed_mid_way_loses_no_prompt_and_uses_no_group_twice(tmp_path_factory, target):
    root = tmp_path_factory.getbasetemp() / "chaos"  # the model and data are built once for both
    root.mkdir(exist_ok=True)
    index = ["redis", "driver"].index(target)
    result = chaos.run_trial(root, index, target, random.Random(index))
    assert result["killed"] == target, result
    assert (result["prompts_lost"], result["groups_used_twice"]) == (0, 0), result
    assert result["ok"], result
    if target == "redis":  # the run waits the restart out (runtime/redis_client.py): no resume needed
        assert result["resumes"] == 0, result
