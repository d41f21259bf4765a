"""`mgpo data select`: pass rates from real rollouts of the tiny model, resume, the kept set, the histogram."""

import json

import pytest

from mgpo.data.dataset import open_store, read_prompts
from recipes.select import PASS_RATES, select
from services.cli import main


@pytest.fixture
def grounding_data(tmp_path):
    data = tmp_path / "data"
    assert main(["data", "synth", "--out", str(data), "--n", "4", "--seed", "3", "--task", "grounding"]) == 0
    return data


@pytest.mark.slow
def test_an_untrained_model_solves_nothing_so_nothing_is_kept_and_it_says_so(
    tmp_path, tiny_small, grounding_data
):
    out = tmp_path / "selected"
    with pytest.raises(ValueError, match="no prompt of 4 has a pass rate strictly between 0.0 and 1.0"):
        select(str(tiny_small), str(grounding_data), str(out), n=2, engine="hf", max_turn_tokens=16)
    rates = [json.loads(x) for x in (out / PASS_RATES).read_text().splitlines()]
    assert len(rates) == 4 and all(r["pass_rate"] == 0.0 for r in rates)
    assert json.loads((out / "pass_rates.json").read_text())["solved_k_of_n"] == {
        "0/2": 4,
        "1/2": 0,
        "2/2": 0,
    }
    assert (out / "pass_rates.png").stat().st_size > 5_000


def test_a_resumed_selection_keeps_the_prompts_solved_sometimes(tmp_path, grounding_data):
    out = tmp_path / "selected"
    out.mkdir()
    ids = [r.id for r in read_prompts(grounding_data)]
    # every prompt already rolled out (a stopped selection), and a line cut short by the stop
    lines = [
        json.dumps({"id": i, "pass_rate": rate}) for i, rate in zip(ids, (0.0, 0.25, 0.75, 1.0), strict=True)
    ]
    (out / PASS_RATES).write_text("\n".join(lines) + '\n{"id": "cut')
    summary = select("no-model-needed", str(grounding_data), str(out), n=4)
    assert [r.id for r in read_prompts(out)] == ids[1:3]
    assert (
        summary["solved_k_of_n"] == {"0/4": 1, "1/4": 1, "2/4": 0, "3/4": 1, "4/4": 1}
        and summary["kept"] == 2
    )
    store = open_store(out)  # the kept prompts' images came along
    assert all(h in store for r in read_prompts(out) for h in r.images)
    with pytest.raises(ValueError, match="0 <= low < high <= 1"):
        select("m", str(grounding_data), str(out), low=0.5, high=0.5)
    with pytest.raises(ValueError, match="max_turn_tokens must be at least 1, got 0"):
        select("m", str(grounding_data), str(out), max_turn_tokens=0)
