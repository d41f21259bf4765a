"""A learner over several data-parallel ranks: who trains on what, and that N ranks step as one does."""

import multiprocessing
import pickle
from pathlib import Path

import pytest
import torch

from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.gather import full_state, state_shapes
from learner.step import Ranks, UpdateConfig, mgpo_step, shard, torch_optimizer_step, with_signal
from mgpo.data.dataset import open_store
from mgpo.loss import LossConfig
from mgpo.models.tiny import load_policy, load_processor
from mgpo.models.weights import policy_state
from runtime.broadcast import plan_buckets
from tests.learner.conftest import rewarded, rollout_groups


def test_every_item_goes_to_exactly_one_rank_and_the_lengths_agree():
    part = [3, 4, 5, 6, 7]
    shards = [shard(part, rank, 2) for rank in range(2)]
    assert shards == [[(3, True), (5, True), (7, True)], [(4, True), (6, True), (6, False)]]
    real = sorted(i for s in shards for i, counts in s if counts)
    assert real == part


def test_a_rank_without_a_group_of_its_own_still_runs_one():
    # ZeRO-2/3 communicate inside backward: every rank must run as many passes as the others
    assert [shard([8], rank, 3) for rank in range(3)] == [[(8, True)], [(8, False)], [(8, False)]]


CONFIG = LossConfig(kl_coef=0.0, entropy_coef=0.001)
UPDATE = UpdateConfig(minibatches=2)  # 3 groups -> updates of [0, 1] and [2]: rank 1 fills the second


def _rank(rank: int, port: int, stage: int, model: str, data: str, groups_file: str, out: str) -> None:
    import torch.distributed as dist

    from learner.engine import EngineConfig, build_deepspeed, deepspeed_callbacks, init_ranks

    init_ranks(rank, 2, "127.0.0.1", port, timeout_s=120)
    groups = pickle.loads(open(groups_file, "rb").read())
    policy = load_policy(model)
    engine = build_deepspeed(
        policy,
        torch.optim.SGD(policy.parameters(), lr=0.05, momentum=0.9),
        EngineConfig(zero_stage=stage, max_grad_norm=1e3),
    )
    backward, step = deepspeed_callbacks(engine)
    ranks = Ranks(rank, 2, lambda tensor: dist.all_reduce(tensor))
    processor, store = load_processor(model), open_store(data)

    def train() -> object:
        return mgpo_step(engine.module, None, groups, processor, store, CONFIG, UPDATE, backward, step, ranks)

    def whole() -> dict:  # ZeRO-3 shards the weights: gathered bucket by bucket (collective), kept on rank 0
        return full_state(engine.module, plan_buckets(state_shapes(engine.module), 1 << 16), keep=rank == 0)

    stats = train()
    state = whole()
    # a checkpoint of both ranks' shards, a second step, then back to the checkpoint and the same step again
    save_checkpoint(engine, Path(out).parent / "checkpoints", 1, {}, state, rank=rank)
    train()
    second = whole()
    load_checkpoint(engine, Path(out).parent / "checkpoints" / "step-000001")
    train()
    again = whole()
    if rank == 0:
        torch.save({"stats": stats._asdict(), "state": state, "second": second, "again": again}, out)
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_two_zero_ranks_step_as_one_torch_process_and_resume_exactly(stage, box_model, synth_data, tmp_path):
    pytest.importorskip("deepspeed")
    groups = rewarded(
        rollout_groups(box_model, synth_data, [0, 1, 2], n=3, max_turn_tokens=16, seed=2), winner=1
    )
    assert len(with_signal(groups)[0]) == 3
    (tmp_path / "groups.pkl").write_bytes(pickle.dumps(groups))

    plain = load_policy(box_model)
    sgd = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)  # a state to checkpoint
    store, processor = open_store(synth_data), load_processor(box_model)
    one = mgpo_step(
        plain,
        None,
        groups,
        processor,
        store,
        CONFIG,
        UPDATE,
        lambda loss: loss.backward(),
        torch_optimizer_step(plain, sgd, 1e3),
    )

    rendezvous = torch.distributed.TCPStore("127.0.0.1", 0, 3, is_master=True, wait_for_workers=False)
    context = multiprocessing.get_context("spawn")
    out = tmp_path / "rank0.pt"
    args = (rendezvous.port, stage, str(box_model), str(synth_data), str(tmp_path / "groups.pkl"), str(out))
    ranks = [context.Process(target=_rank, args=(rank, *args)) for rank in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=300)
    assert [p.exitcode for p in ranks] == [0, 0]

    two = torch.load(out, weights_only=False)
    for key in ("loss", "policy", "entropy", "grad_norm", "tokens", "degenerate_groups"):
        assert two["stats"][key] == pytest.approx(getattr(one, key), rel=1e-4, abs=1e-6), key
    expected = policy_state(plain)
    assert two["state"].keys() == expected.keys()
    for name, a in expected.items():
        assert two["state"][name].shape == a.shape and torch.allclose(a, two["state"][name], atol=1e-6), name
    # resumed from the two ranks' checkpoint, the second step is taken again exactly
    assert any(not torch.equal(two["second"][k], two["state"][k]) for k in expected)
    for name in expected:
        assert torch.equal(two["again"][name], two["second"][name]), name
