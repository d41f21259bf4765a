import json
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from runtime.broadcast import pack, plan_buckets, plan_for, receive, send, unpack
from runtime.redis_server import free_port


def test_plan_groups_by_dtype_and_respects_the_bucket_size():
    tensors = [
        ("a", (10, 10), torch.float32),
        ("b", (50,), torch.float32),
        ("c", (4,), torch.bfloat16),
        ("d", (100,), torch.float32),
    ]
    plan = plan_buckets(tensors, bucket_bytes=600)  # 150 fp32 elements per bucket
    fp32 = [b for b in plan if b.dtype == torch.float32]
    # a (100) + b (50) = 150 elements = 600 bytes fits; d (100) opens a second bucket
    assert [[s.name for s in b.slots] for b in fp32] == [["a", "b"], ["d"]]
    assert [b.numel for b in fp32] == [150, 100]
    assert [[s.name for s in b.slots] for b in plan if b.dtype == torch.bfloat16] == [["c"]]


def test_pack_then_unpack_restores_every_tensor():
    state = {"w": torch.randn(3, 4), "b": torch.randn(4), "h": torch.randn(2, 2).to(torch.bfloat16)}
    for bucket in plan_for(state, bucket_bytes=1 << 20):
        for name, tensor in unpack(pack(state, bucket), bucket):
            assert torch.equal(tensor, state[name]) and tensor.shape == state[name].shape


def _member(rank: int, world: int, port: int, state: dict, bucket_bytes: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    plan = plan_for(state, bucket_bytes)
    if rank == 0:
        dist.barrier()
        start = time.perf_counter()
        sent = send(state, plan)
        seconds = time.perf_counter() - start
        with open(out, "w") as f:
            json.dump({"bytes": sent, "seconds": seconds, "buckets": len(plan), "tensors": len(state)}, f)
    else:
        dist.barrier()
        received = dict(receive(plan))
        ok = received.keys() == state.keys() and all(torch.equal(received[k], state[k]) for k in state)
        with open(f"{out}.{rank}", "w") as f:
            f.write("ok" if ok else "mismatch")
    dist.destroy_process_group()


@pytest.mark.slow
def test_a_learner_broadcasts_a_model_to_two_receivers_in_buckets(tiny_small, tmp_path):
    from mgpo.models.tiny import load_policy
    from mgpo.models.weights import policy_state

    state = {k: v.clone() for k, v in policy_state(load_policy(tiny_small)).items()}
    out = str(tmp_path / "result.json")
    mp.start_processes(
        _member, args=(3, free_port(), state, 4 << 20, out), nprocs=3, start_method="spawn", join=True
    )
    result = json.load(open(out))
    assert all(open(f"{out}.{r}").read() == "ok" for r in (1, 2))
    assert result["buckets"] < result["tensors"]  # one collective per bucket, not per tensor
    assert result["bytes"] == sum(v.numel() * v.element_size() for v in state.values())
    print(
        f"broadcast {result['bytes'] / 1e6:.1f} MB to 2 receivers in {result['buckets']} buckets: {result['bytes'] / result['seconds'] / 1e6:.0f} MB/s"
    )
