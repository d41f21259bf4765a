"""The looks decision probe (benchmarks/looks_decision_probe.py): each trajectory's decision, and the push
GRPO gives each decision; then the script on the tiny model, with a run config of the multi-turn RL."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mgpo.boxes import Box
from mgpo.crop import View
from mgpo.records import TrajectoryGroup, TrajectorySample
from mgpo.turns import INVALID_CROP

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from looks_decision_probe import decision, table  # noqa: E402

CROP = Box(0.0, 0.0, 10.0, 10.0)


def _sample(reward: float, views: int, finish: str = "stop", text: tuple[str, ...] = ()) -> TrajectorySample:
    shown = (View("a"), *(View("a", CROP) for _ in range(views - 1)))
    empty = np.zeros(1, dtype=np.int32)
    turns = views if finish != INVALID_CROP else 2
    return TrajectorySample(
        empty, empty.astype(bool), empty.astype(np.float32), shown, reward, True, turns, finish, text
    )


def test_each_trajectory_names_its_decision():
    assert decision(_sample(1.2, 1)) == "direct"
    assert decision(_sample(1.0, 2, text=('{"bbox_2d": [0, 0, 9, 9]}',))) == "one crop"
    two = _sample(1.0, 3, text=('{"bbox_2d": [0, 0, 9, 9]}', '{"bbox_2d": [0, 0, 9, 9], "image": 2}'))
    assert decision(two) == "two crops"
    assert decision(_sample(0.0, 1, finish=INVALID_CROP, text=('{"bbox_2d": [0, 0',))) == "malformed crop"
    assert decision(_sample(0.0, 3, finish="over_turn")) == "cut off"


def test_the_push_sums_each_decisions_advantages_per_sample_of_its_category():
    # one group: two direct answers right (1.2), one crop right (1.0), one malformed request (0)
    samples = (
        _sample(1.2, 1),
        _sample(1.2, 1),
        _sample(1.0, 2, text=("{}",)),
        _sample(0.0, 1, finish=INVALID_CROP, text=("{",)),
    )
    result = table({"look1": [TrajectoryGroup("g", "p", 0, samples, 1, 1)]})["look1"]
    rewards = np.array([1.2, 1.2, 1.0, 0.0])
    advantages = (rewards - rewards.mean()) / (rewards.std(ddof=1) + 1e-6)
    assert result["direct"] == {"share": 0.5, "right": 1.0, "push": round(advantages[:2].sum() / 4, 3)}
    assert result["one crop"]["push"] == round(advantages[2] / 4, 3)
    assert result["malformed crop"] == {"share": 0.25, "right": 0.0, "push": round(advantages[3] / 4, 3)}
    assert result["malformed crop"]["push"] < 0 < result["direct"]["push"]
    assert set(result) == {"direct", "one crop", "malformed crop"}


@pytest.mark.slow
def test_the_probe_rolls_out_the_runs_loop_and_writes_a_row_per_category(tiny_small, tmp_path):
    from mgpo.data.dataset import write_synthetic
    from recipes.stages import CONFIGS, write_config
    from runtime.config import load_sft_config

    knobs = load_sft_config(CONFIGS / "reproduce" / "looks-cold-start.yaml").data.knobs()
    # seed 2: one question of each category (look0, look2, look1)
    write_synthetic(tmp_path / "data", 3, 2, task="looks", knobs=knobs, progress=False)
    changes = {"model": {"path": str(tiny_small)}, "data": {"path": str(tmp_path / "data")}}
    changes["rollout"] = {"direct_bonus": 0.3}  # not the default: the probe must take the run's
    config = write_config(CONFIGS / "reproduce" / "looks-multiturn.yaml", tmp_path / "run.yaml", changes)
    out = tmp_path / "probe.json"
    command = [sys.executable, "benchmarks/looks_decision_probe.py", "--config", str(config), "--n", "2"]
    done = subprocess.run(
        [*command, "--engine", "hf", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["direct_bonus"] == 0.3 and report["invalid_crop"] == "end" and report["n"] == 2
    assert report["top_p"] == 0.8 and report["scale_rewards"] is False  # the run's, as its learner uses
    assert set(report["categories"]) == {"look0", "look1", "look2"}
    for rows in report["categories"].values():
        assert abs(sum(r["share"] for r in rows.values()) - 1.0) < 0.01
        assert abs(sum(r["push"] for r in rows.values())) < 0.01  # advantages sum to 0 in each group
