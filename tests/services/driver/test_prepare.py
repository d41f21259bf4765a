import pytest

from runtime.config import parse_config
from services.driver.prepare import actor_spec, learner_spec
from services.driver.ray_start import check_gpus
from services.driver.weight_sync import member_ranks


def test_a_run_asking_for_gpus_a_local_machine_lacks_is_refused_at_start():
    config = parse_config({"learner": {"gpus": 2, "world_size": 2}, "rollout": {"gpus_per_actor": 0.5}})
    with pytest.raises(ValueError) as err:
        check_gpus(config, available=2.0)
    assert str(err.value) == (
        "learner.gpus x learner.world_size 4, but this machine has 2 GPUs (local Ray): lower them"
    )
    with pytest.raises(ValueError, match="rollout.gpus_per_actor 0.5, but this machine has 0 GPUs"):
        check_gpus(config, available=0.0)
    check_gpus(config, available=4.0)  # enough: no error


def test_each_actor_gets_its_own_seed_and_the_queue_settings():
    config = parse_config({"seed": 5, "queue": {"max_deliveries": 7, "claim_idle_ms": 900}})
    specs = [actor_spec(config, "m", "redis://x", f"a{i}", i, None, 0) for i in range(2)]
    assert [s.seed for s in specs] == [5, 1005]
    assert {(s.max_deliveries, s.claim_idle_ms) for s in specs} == {(7, 900)}


def test_sigterm_stops_the_run_like_ctrl_c_once_and_a_repeat_does_not_cut_the_shutdown_short():
    import os
    import signal

    from services.driver.ray_start import stop_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler at the next bytecode
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: the shutdown that the first one started goes on
    finally:
        signal.signal(signal.SIGTERM, before)


def test_actors_run_the_models_dtype_and_tensor_parallel():
    config = parse_config(
        {
            "model": {"dtype": "bf16"},
            "rollout": {"tensor_parallel": 2, "gpus_per_actor": 2, "stream_weights": True},
        }
    )
    spec = actor_spec(config, "m", "redis://x", "a0", 0, None, 0)
    assert (spec.dtype, spec.tensor_parallel, spec.stream_weights) == ("bf16", 2, True)


def test_tensor_parallel_needs_a_gpu_per_shard():
    with pytest.raises(ValueError, match="tensor_parallel 2 needs the vllm engine and gpus_per_actor >= 2"):
        parse_config({"rollout": {"tensor_parallel": 2, "gpus_per_actor": 1}})


def test_each_tensor_parallel_worker_has_its_own_broadcast_rank():
    first, world_size = member_ranks(("a", "b", "c"), tensor_parallel=2)
    assert first == {"a": 1, "b": 3, "c": 5} and world_size == 7  # learner 0; a: 1-2, b: 3-4, c: 5-6
    assert member_ranks(("a",), 1) == ({"a": 1}, 2)


def test_roles_are_pinned_to_the_cores_the_config_names():
    config = parse_config({"learner": {"cpu_affinity": [1]}, "rollout": {"cpu_affinity": [0]}})
    assert actor_spec(config, "m", "redis://x", "a0", 0, None, 0).cpu_affinity == (0,)
    assert learner_spec(config, "m", "redis://x", resume=False).cpu_affinity == (1,)
    with pytest.raises(ValueError, match="learner.cpu_affinity.0"):
        parse_config({"learner": {"cpu_affinity": [-1]}})
