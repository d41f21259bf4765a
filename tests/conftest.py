"""Session-wide fixtures: models and tokenizers are built once, offline."""

from __future__ import annotations

import pytest

from mgpo.resize import FACTOR, PixelBudget

TINY_BUDGET = PixelBudget(min_pixels=64 * FACTOR * FACTOR, max_pixels=256 * FACTOR * FACTOR)
pytest_plugins = ["tests.rollout_fixtures"]  # synth_data, box_model, vllm_engine


@pytest.fixture(scope="session")
def qwen_tok():
    from mgpo.models.tokenizer import qwen_tokenizer

    return qwen_tokenizer()


@pytest.fixture(scope="session")
def tiny_small(tmp_path_factory):
    """A tiny Qwen2.5-VL with the small tokenizer (fast)."""
    from mgpo.models.tiny import build_tiny

    return build_tiny(
        tmp_path_factory.mktemp("tiny-small"), tokenizer="small", size="xs", seed=0, budget=TINY_BUDGET
    )


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    """A tiny Qwen2.5-VL with the real Qwen2.5 vocabulary."""
    from mgpo.models.tiny import build_tiny

    return build_tiny(
        tmp_path_factory.mktemp("tiny-qwen"), tokenizer="qwen", size="xs", seed=0, budget=TINY_BUDGET
    )


@pytest.fixture(scope="session")
def redis_server():
    """A private Redis-protocol server for the test session (never on Ray's port 6379)."""
    from runtime.redis_server import RedisServer

    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def ray_local():
    """Local Ray with logical CPUs for several actors (physical cores: 2)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()
