"""The learner process on real Redis and DeepSpeed (no Ray): staleness, duplicates, checkpoints, resume."""

import dataclasses
import itertools
import json

import pytest
import redis
import torch

from learner.service import Learner, LearnerSpec
from mgpo.loss import LossConfig
from mgpo.models.weights import policy_state
from runtime.queue import Queue
from runtime.run_state import RunState
from tests.learner.conftest import rewarded, rollout_groups

pytestmark = pytest.mark.slow
_runs = itertools.count()


@pytest.fixture(scope="module")
def groups(box_model, synth_data):
    """Real MGPO groups with mixed rewards (signal in every group)."""
    made = rewarded(
        rollout_groups(box_model, synth_data, [0, 1, 2], n=3, max_turn_tokens=16, seed=5), winner=0
    )
    return made


def _learner(box_model, synth_data, redis_server, run, run_dir, resume=False, **kw) -> Learner:
    spec = LearnerSpec(
        model_path=str(box_model),
        redis_url=redis_server.url,
        run=run,
        image_store=str(synth_data / "images"),
        run_dir=str(run_dir),
        lr=1e-3,
        resume=resume,
        **{"loss": LossConfig(kl_coef=0.0, entropy_coef=0.001), **kw},
    )
    return Learner(spec)


def _push(redis_server, run, groups, versions, ids):
    queue = Queue(redis.Redis.from_url(redis_server.url), run, "test")
    queue.ensure_groups()
    made = [
        dataclasses.replace(groups[i % len(groups)], id=gid, policy_version=v)
        for i, (gid, v) in enumerate(zip(ids, versions, strict=True))
    ]
    queue.complete_prompts([], made)


def _ledger(run_dir):
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]


def test_stale_and_duplicate_groups_are_dropped_counted_and_returned_to_admission(
    box_model, synth_data, redis_server, groups, tmp_path
):
    run = f"svc{next(_runs)}"
    learner = _learner(box_model, synth_data, redis_server, run, tmp_path, groups_per_step=2, max_staleness=1)
    learner.version = 2  # as if two steps were taken
    _push(redis_server, run, groups, [2, 0, 2, 1], ["a", "b", "a", "c"])
    stats = learner.step(timeout_s=5)
    assert stats is not None and stats["version"] == 3
    assert learner.counters == {"used": 2, "stale": 1, "duplicate": 1, "unreadable": 0}
    assert stats["staleness_max"] == 1.0 and stats["staleness_mean"] == 0.5  # a at 0, c at 1
    # what the actors sampled in the groups used (benchmarks count tokens/s with it)
    assert stats["generated_tokens"] == 2.0 * sum(s.sampled_tokens for s in groups[0].samples)  # a and c
    assert RunState(learner.queue.client, run).read().returned == 2  # admission lets two more in
    used = [x for e in _ledger(tmp_path) for x in e.get("used", [])]
    dropped = {k: [x for e in _ledger(tmp_path) for x in e.get(k, [])] for k in ("stale", "duplicate")}
    assert used == ["a", "c"] and dropped == {"stale": ["b"], "duplicate": ["a"]}


def test_a_killed_learner_resumes_from_its_checkpoint_exactly_with_no_group_lost_or_used_twice(
    box_model, synth_data, redis_server, groups, tmp_path
):
    run = f"svc{next(_runs)}"
    ids = [f"g{i}" for i in range(6)]
    _push(redis_server, run, groups, [0] * 6, ids)
    first = _learner(box_model, synth_data, redis_server, run, tmp_path, groups_per_step=2, max_staleness=10)
    assert first.step(timeout_s=5)["version"] == 1
    first.checkpoint()
    assert first.step(timeout_s=5)["version"] == 2
    after_two = {k: v.clone() for k, v in policy_state(first.engine.module).items()}
    del first  # killed after a step the checkpoint does not hold: g2, g3 stay pending in Redis

    second = _learner(
        box_model, synth_data, redis_server, run, tmp_path, resume=True, groups_per_step=2, max_staleness=10
    )
    assert second.version == 1 and second.counters["used"] == 2
    assert second.step(timeout_s=5)["version"] == 2  # the pending g2, g3 again, in order
    for name, tensor in policy_state(second.engine.module).items():  # optimizer state restored too
        assert torch.allclose(tensor, after_two[name], atol=1e-6), name
    assert second.step(timeout_s=5)["version"] == 3
    second.checkpoint()
    used = [x for e in _ledger(tmp_path) for x in e.get("used", [])]
    assert used == ids  # one timeline: each group once, in order
    depth = second.queue.depth()
    assert depth["trajectories_len"] == 0 and depth["trajectories_pending"] == 0  # all committed


def test_a_lora_learner_trains_adapters_only_anchors_kl_on_its_base_and_ships_merged_weights(
    box_model, synth_data, redis_server, groups, tmp_path
):
    from learner.gather import PolicyWeights
    from learner.lora import load_adapter
    from mgpo.models.tiny import load_policy
    from runtime.config import LoraSection

    run = f"svc{next(_runs)}"
    _push(redis_server, run, groups, [0] * 6, [f"l{i}" for i in range(6)])
    lora = LoraSection(rank=4, alpha=8.0, dropout=0.0)
    learner = _learner(
        box_model,
        synth_data,
        redis_server,
        run,
        tmp_path,
        groups_per_step=2,
        max_staleness=10,
        lora=lora,
        loss=LossConfig(kl_coef=0.05, entropy_coef=0.001),
    )
    base = policy_state(load_policy(box_model))
    first = learner.step(timeout_s=5)
    assert first["kl"] == 0.0  # fresh adapters (B = 0): the policy is its base, the reference
    assert learner.step(timeout_s=5)["kl"] > 0.0  # the adapters moved; the reference (adapters off) did not

    merged = learner._full_state()
    assert merged.keys() == base.keys()  # HF names, what the actors load
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[q], base[q])  # adapted: W + delta
    frozen = PolicyWeights(learner.engine.module).sources  # the base weights themselves did not move
    assert all(torch.equal(frozen[k][0].detach(), base[k]) for k in base)
    assert torch.equal(
        merged["model.visual.patch_embed.proj.weight"], base["model.visual.patch_embed.proj.weight"]
    )
    adapter = tmp_path / "adapter"
    learner.engine.module.save_pretrained(adapter)
    reference = policy_state(load_adapter(box_model, adapter, trainable=False).merge_and_unload())
    for name, tensor in reference.items():  # peft's own merge agrees
        assert torch.allclose(merged[name], tensor, atol=1e-6), name

    # the broadcast carries the merged weights: an actor's engine ends up with them
    import threading

    from actors.hf_engine import HFEngine
    from tests.conftest import TINY_BUDGET

    actor = HFEngine(str(box_model), TINY_BUDGET)
    address = learner.address(2)
    receiver = threading.Thread(target=actor.receive_weights, args=(address, 1, learner.wire_plan(), 2))
    receiver.start()
    learner.sync(address)
    receiver.join()
    received = policy_state(actor.model)
    assert all(torch.allclose(received[k], merged[k], atol=1e-6) for k in merged)

    out = learner.export(str(tmp_path / "final"))
    exported = policy_state(load_policy(out))
    assert all(torch.allclose(exported[k], merged[k], atol=1e-6) for k in merged)
    learner.checkpoint()
    resumed = _learner(
        box_model,
        synth_data,
        redis_server,
        run,
        tmp_path,
        resume=True,
        groups_per_step=2,
        max_staleness=10,
        lora=lora,
        loss=LossConfig(kl_coef=0.05, entropy_coef=0.001),
    )
    assert all(torch.equal(resumed._full_state()[k], merged[k]) for k in merged)  # adapters restored


def test_batches_are_built_while_the_learner_waits_and_dropped_once_used(
    box_model, synth_data, redis_server, groups, tmp_path
):
    run = f"svc{next(_runs)}"
    learner = _learner(
        box_model, synth_data, redis_server, run, tmp_path, groups_per_step=2, max_staleness=10
    )
    _push(redis_server, run, groups, [0], ["w0"])
    assert learner.step(timeout_s=1) is None  # one group of two: it waits, and builds w0's batch meanwhile
    assert list(learner._ready) == ["w0"] and learner._ready["w0"].tokens > 0
    _push(redis_server, run, groups, [0], ["w1"])
    stats = learner.step(timeout_s=5)
    assert stats["version"] == 1 and stats["wait_seconds"] > 0.9  # the timed-out call's wait counts too
    assert learner._ready == {}  # used: nothing kept past its step
