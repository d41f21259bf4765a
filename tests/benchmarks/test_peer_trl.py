"""The arithmetic and the measuring of benchmarks/peer_trl.py (its real run is the benchmark itself: TRL lives
in its own venv, which the suite does not build)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "peer_trl", Path(__file__).resolve().parents[2] / "benchmarks" / "peer_trl.py"
)
peer_trl = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(peer_trl)


def _step(skipped: float) -> dict:
    return {
        "trajectories": 32,
        "tokens": 640,
        "groups": 4,
        "skipped_groups": skipped,
        "learner_seconds_per_group": 1.0,
    }


def test_steady_state_leaves_out_the_first_two_steps_and_charges_skipped_groups():
    ends = [100.0, 110.0, 114.0, 118.0]  # steps 3 and 4 each take 4 s
    result = peer_trl.rates(90.0, 40.0, 2**30, ends, [_step(0), _step(0), _step(2), _step(0)])
    assert result["first_step_seconds"] == 10.0 and result["steady_seconds"] == 8.0
    assert result["steady_trajectories_per_second"] == 64 / 8
    assert result["steady_tokens_per_second"] == 1280 / 8
    # two skipped groups at 1 s each: TRL would have trained them
    assert result["charged_trajectories_per_second"] == 64 / 10
    assert result["skipped_group_share"] == 2 / 8 and result["peak_memory_gb"] == 1.0


def test_a_run_without_skipped_groups_is_not_charged():
    result = peer_trl.rates(0.0, 1.0, 0, [1.0, 2.0, 3.0], [{"trajectories": 8, "tokens": 1}] * 3)
    assert "charged_trajectories_per_second" not in result and result["steady_trajectories_per_second"] == 8.0


def test_ratios_pair_each_mode_with_the_trl_run_of_its_round():
    def run(rate: float, wall: float) -> dict:
        return {
            "steady_trajectories_per_second": rate,
            "charged_trajectories_per_second": rate / 2,
            "steady_tokens_per_second": rate,
            "wall_seconds": wall,
            "first_step_seconds": wall / 2,
        }

    rounds = [{"trl": run(2, 100), "sync": run(4, 100), "async": run(6, 50)} for _ in range(2)]
    rounds.append({"trl": run(1, 100), "sync": run(4, 100), "async": run(6, 50)})
    out = peer_trl.ratios(rounds)
    assert out["sync"]["steady_trajectories_per_second"]["rounds"] == [2.0, 2.0, 4.0]
    assert out["sync"]["steady_trajectories_per_second"]["median"] == 2.0
    assert out["async"]["trl_wall_over_ours"]["median"] == 2.0
    assert out["async"]["charged_trajectories_per_second"]["median"] == 1.5


def test_peak_memory_counts_the_children_of_the_process(tmp_path):
    # the child holds 200 MB; its parent (a shell) holds almost nothing
    code = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)"
    started, wall, peak, _ = peer_trl.spawn(
        ["sh", "-c", f'{sys.executable} -c "{code}"; true'], tmp_path / "run.log"
    )
    assert peak > 200 * 2**20 and wall >= 2.0
    assert (tmp_path / "run.out").read_text() == ""  # the command's stdout, kept beside its log


def test_a_failed_run_says_where_its_log_is(tmp_path):
    with pytest.raises(RuntimeError, match="run.log"):
        peer_trl.spawn([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "run.log")
