"""`mgpo data select`: rejection sampling (arXiv 2507.00748, stage 3): keep the prompts RL can learn from.

Every prompt is rolled out `n` times with the task's reward by the model (our engines, offline on one
machine; on a cluster, the run's rollout actors through the queue: services.driver.selector); its pass rate
is the share of samples that solved it (grounding: the right image and IoU >= 0.5).
A prompt whose pass rate lies strictly between `low` and `high` is kept: by default neither always nor never
solved, so its group's rewards differ and GRPO gets a gradient from it. Pass rates are appended to
`pass_rates.jsonl` as prompts finish, so a stopped selection resumes; the histogram goes to PNG and JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from actors.loop import Loop, Tokenizer
from actors.rollout_actor import build_engine, engine_tokenizer, rollout_settings
from mgpo.data.dataset import open_store, read_prompts, write_subset
from mgpo.images import ImageStore
from mgpo.records import PromptRecord, TrajectoryGroup
from mgpo.resize import PixelBudget
from recipes.evaluate import eval_spec, input_sizes, passed

PASS_RATES = "pass_rates.jsonl"


def done_rates(out: Path) -> dict[str, float]:
    """The pass rates a stopped selection already wrote to `out/pass_rates.jsonl`."""
    path = out / PASS_RATES
    if not path.exists():
        return {}
    rates = {}
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
            rates[str(item["id"])] = float(item["pass_rate"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a stop: that prompt is rolled out again
    return rates


def pass_rates(
    model: str,
    records: list[PromptRecord],
    store: ImageStore,
    out: Path,
    n: int,
    engine: str,
    budget: PixelBudget,
    batch: int = 4,
    max_turn_tokens: int = 256,
) -> dict[str, float]:
    """Each record's pass rate over `n` samples at temperature 1; the ones in `out/pass_rates.jsonl` are kept."""
    path = out / PASS_RATES
    rates = done_rates(out)
    todo = [r for r in records if r.id not in rates]
    if not todo:
        return rates
    spec = eval_spec(model, "mgpo", str(store.root), engine, budget, max_turn_tokens, n=n, temperature=1.0)
    policy = build_engine(spec)
    try:
        loop = Loop(policy, Tokenizer(engine_tokenizer(policy)), store, rollout_settings(spec), "select")
        with open(path, "a") as log:
            for i in tqdm(range(0, len(todo), batch), desc=f"select (n={n})", unit="batch"):
                chunk = todo[i : i + batch]
                for record, group in zip(chunk, loop.rollout(chunk, seed=i), strict=True):
                    rates[record.id] = log_rate(log, record, group, store, budget)
    finally:
        policy.close()
    return rates


def log_rate(
    log: TextIO, record: PromptRecord, group: TrajectoryGroup, store: ImageStore, budget: PixelBudget
) -> float:
    """The share of the group's samples that solved `record`, appended to the open pass-rates file."""
    sizes = input_sizes(record, store, budget)
    rate = sum(passed(record, s, sizes) for s in group.samples) / len(group.samples)
    log.write(json.dumps({"id": record.id, "pass_rate": rate}) + "\n")
    log.flush()  # a stop loses at most the line being written
    return rate


def histogram(
    rates: dict[str, float], n: int, out: Path, low: float, high: float, kept: int
) -> dict[str, object]:
    """How many prompts were solved k times of n, as JSON and a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = Counter(round(rate * n) for rate in rates.values())
    bins = {f"{k}/{n}": counts.get(k, 0) for k in range(n + 1)}
    result = {"n": n, "prompts": len(rates), "kept": kept, "low": low, "high": high, "solved_k_of_n": bins}
    (out / "pass_rates.json").write_text(json.dumps(result, indent=1) + "\n")
    figure, axis = plt.subplots(figsize=(6, 3.5))
    colours = ["tab:green" if low < k / n < high else "tab:grey" for k in range(n + 1)]
    axis.bar(list(bins), list(bins.values()), color=colours)
    axis.set_xlabel(f"samples that solved the prompt (of {n})")
    axis.set_ylabel("prompts")
    axis.set_title(f"pass rates: {kept} of {len(rates)} kept (green)")
    figure.tight_layout()
    figure.savefig(out / "pass_rates.png", dpi=100)
    plt.close(figure)
    return result


def select(
    model: str,
    data: str,
    out: str,
    n: int = 8,
    low: float = 0.0,
    high: float = 1.0,
    engine: str = "vllm",
    budget: PixelBudget = PixelBudget(64 * 28 * 28, 256 * 28 * 28),
    max_turn_tokens: int = 256,
) -> dict[str, object]:
    """Write the RL dataset folder `out` with the prompts of `data` whose pass rate is in (low, high);
    `max_turn_tokens` caps each model turn (as `rollout.max_turn_tokens` in training: a CoT reply longer
    than it is cut and fails)."""
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"need 0 <= low < high <= 1, got low {low}, high {high}")
    if max_turn_tokens < 1:
        raise ValueError(f"max_turn_tokens must be at least 1, got {max_turn_tokens}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    source = open_store(data)
    records = list(read_prompts(data))
    rates = pass_rates(model, records, source, folder, n, engine, budget, max_turn_tokens=max_turn_tokens)
    return keep(records, rates, source, folder, n, (low, high), {"source": str(data), "model": model})


def keep(
    records: list[PromptRecord],
    rates: dict[str, float],
    source: ImageStore,
    folder: Path,
    n: int,
    bounds: tuple[float, float],
    meta: dict[str, object],
) -> dict[str, object]:
    """Write the prompts whose pass rate lies strictly within `bounds` as a dataset in `folder`, with the
    histogram; a prompt without a rate (it never came back) is not kept."""
    low, high = bounds
    kept = [r for r in records if low < rates.get(r.id, -1.0) < high]
    summary = histogram(rates, n, folder, low, high, len(kept))
    if not kept:
        raise ValueError(
            f"no prompt of {len(records)} has a pass rate strictly between {low} and {high} "
            f"(histogram in {folder / 'pass_rates.png'}): widen the bounds or change the model"
        )
    write_subset(folder, kept, source, {"format": "mgpo-selected", **meta, **summary})
    print(json.dumps({"out": str(folder), "kept": len(kept), "prompts": len(records)}), flush=True)
    return summary
