import pytest

from runtime.config import parse_config
from services.driver.prepare import actor_spec, check_gpus


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

    from services.driver.prepare import stop_on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler at the next bytecode
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: the shutdown that the first one started goes on
    finally:
        signal.signal(signal.SIGTERM, before)
