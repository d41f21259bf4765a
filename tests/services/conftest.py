"""The format-warmed tiny model the end-to-end runs train (tests/services/test_serve.py and
tests/services/driver/test_train.py), built once for both by `mgpo train`'s own code."""

from __future__ import annotations

import pytest
from rich.console import Console

from runtime.config import parse_config
from services.driver.prepare import prepare_model
from tests.conftest import TINY_BUDGET


@pytest.fixture(scope="session")
def warm_model(synth_data, tmp_path_factory) -> str:
    """What a run with `model: {path: tiny, warmup_steps: 60}` trains: the xs tiny model after a 60-step
    format warm start on the first 4 synthetic prompts (25-30 s here; each run built its own, 76 s
    inside a run's driver). Sampled at temperature 0.5 about a third of its boxes are valid, which the
    viewer test needs."""
    config = parse_config(
        {
            "name": "warm",
            "output_dir": str(tmp_path_factory.mktemp("warm")),
            "model": {"path": "tiny", "tiny_size": "xs", "warmup_steps": 60},
            "rollout": {"min_pixels": TINY_BUDGET.min_pixels, "max_pixels": TINY_BUDGET.max_pixels},
        }
    )
    return prepare_model(config, synth_data, Console(quiet=True))
