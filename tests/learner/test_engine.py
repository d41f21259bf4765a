import pytest
import torch

from learner.engine import EngineConfig, build_deepspeed, deepspeed_callbacks
from learner.step import UpdateConfig, mgpo_step, torch_optimizer_step
from mgpo.data.dataset import open_store
from mgpo.loss import LossConfig
from mgpo.models.tiny import load_policy, load_processor
from runtime.redis_server import free_port
from tests.learner.conftest import rewarded, rollout_groups

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stage", [0, 1])
def test_a_deepspeed_step_equals_the_torch_step(stage, box_model, synth_data, monkeypatch):
    pytest.importorskip("deepspeed")
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }.items():
        monkeypatch.setenv(key, value)
    store = open_store(synth_data)
    groups = rewarded(
        rollout_groups(box_model, synth_data, [1, 2], n=3, max_turn_tokens=16, seed=2), winner=1
    )
    processor = load_processor(box_model)
    config = LossConfig(kl_coef=0.0, entropy_coef=0.001)

    plain = load_policy(box_model)
    sgd = torch.optim.SGD(plain.parameters(), lr=0.05)
    torch_stats = mgpo_step(
        plain,
        None,
        groups,
        processor,
        store,
        config,
        UpdateConfig(),
        lambda loss: loss.backward(),
        torch_optimizer_step(plain, sgd, 1.0),
    )

    wrapped = load_policy(box_model)
    ds = build_deepspeed(
        wrapped,
        torch.optim.SGD(wrapped.parameters(), lr=0.05),
        EngineConfig(zero_stage=stage, max_grad_norm=1.0),
    )
    backward, step = deepspeed_callbacks(ds)
    ds_stats = mgpo_step(ds.module, None, groups, processor, store, config, UpdateConfig(), backward, step)

    assert ds_stats.loss == pytest.approx(torch_stats.loss, abs=1e-6)
    for (name, a), b in zip(plain.named_parameters(), ds.module.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    assert ds_stats.grad_norm == pytest.approx(torch_stats.grad_norm, rel=1e-4)


def _in_subprocess(code: str, env: dict[str, str]) -> str:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]  # DeepSpeed logs its accelerator on stdout first


INIT = (
    "import os, torch.distributed as dist; from learner.engine import init_single_rank; init_single_rank(); "
    "print(dist.is_initialized(), dist.is_initialized() and dist.get_world_size(), os.environ.get('MASTER_PORT'))"
)


def test_a_single_rank_learner_binds_its_own_store_port():
    # the port is the OS's at bind time, not one picked free earlier that a neighbour could take meanwhile
    initialised, world, port = _in_subprocess(INIT, {}).split()
    assert (initialised, world) == ("True", "1") and int(port) > 0


def test_a_launchers_settings_are_left_to_deepspeed():
    assert _in_subprocess(INIT, {"MASTER_PORT": "29555"}) == "False False 29555"
    assert _in_subprocess(INIT, {"WORLD_SIZE": "2", "MASTER_PORT": "29556"}).startswith("False")
