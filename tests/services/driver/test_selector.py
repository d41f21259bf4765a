"""`mgpo data select --config RUN.yaml`: rejection sampling through the queue and the run's rollout actors, as
a user runs it (private Redis, local Ray, a real engine in a Ray actor), with the demo's RL start, which
answers the demo's questions right about a third of the time: some prompts are solved sometimes."""

import json
import subprocess
import sys

import pytest
import yaml

from mgpo.data.dataset import read_prompts, write_synthetic
from recipes.demo import COLD_START_CONFIG, RL_CONFIG, RL_START
from recipes.select import PASS_RATES
from runtime.config import load_sft_config

pytestmark = pytest.mark.slow
PROMPTS, N = 6, 4


@pytest.fixture
def run_config(tmp_path):
    data = tmp_path / "data"
    write_synthetic(
        data, PROMPTS, 7, knobs=load_sft_config(COLD_START_CONFIG).data.knobs(), image_format="png"
    )
    config = yaml.safe_load(RL_CONFIG.read_text())
    config.update(name="sel", output_dir=str(tmp_path / "runs"))
    config["model"]["path"] = str(RL_START)
    config["data"]["path"] = str(data)
    config["rollout"].update(engine="hf", n=N, batch_prompts=3)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, data


def _select(config, out, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "services.cli", "data", "select", "--config", str(config)]
    command += ["--out", str(out), *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_the_run_actors_rate_every_prompt_once_and_a_rerun_rolls_out_nothing(tmp_path, run_config):
    config, data = run_config
    out = tmp_path / "selected"
    first = _select(config, out)
    assert first.returncode == 0, first.stderr[-3000:]
    rates = {r["id"]: r["pass_rate"] for r in map(json.loads, (out / PASS_RATES).read_text().splitlines())}
    ids = [r.id for r in read_prompts(data)]
    assert sorted(rates) == sorted(ids)  # every prompt once, through the queue
    assert all(rate * N == int(rate * N) for rate in rates.values())
    kept = [i for i in ids if 0.0 < rates[i] < 1.0]
    assert kept and [r.id for r in read_prompts(out)] == kept
    histogram = json.loads((out / "pass_rates.json").read_text())
    assert histogram["prompts"] == PROMPTS and histogram["kept"] == len(kept)
    assert "actor sel-select-actor-0 starting (weights v0)" in first.stdout

    again = _select(config, out)  # resumed: everything is rated already, no actor is started
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        "starting (weights" not in again.stdout
        and len((out / PASS_RATES).read_text().splitlines()) == PROMPTS
    )
    assert [r.id for r in read_prompts(out)] == kept


def test_empty_bounds_are_refused_before_anything_starts(tmp_path, run_config):
    config, _ = run_config
    refused = _select(config, tmp_path / "selected", "--low", "0.5", "--high", "0.5")
    assert refused.returncode == 2 and "need 0 <= low < high <= 1, got low 0.5, high 0.5" in refused.stderr
    assert not (tmp_path / "selected").exists()
