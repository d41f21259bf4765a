"""`mgpo eval --bench NAME PATH`: a policy on a published benchmark folder, scored the benchmark's way.

- V* (`vstar`): accuracy per category (direct_attributes, relative_position) and overall; the per-image
  jsons list the right answer first, so their options are shuffled with `--seed` (said in the output).
- MME-RealWorld (`mme-realworld`): accuracy per task and per task/subtask, overall as the micro-average.
- MIG-Bench (`mig-bench`): Acc@IoU>=0.5 per task; overall is the unweighted mean of the tasks.
- Counting (`pixmo`, `fsc147`): exact-match accuracy of the count.
Multiple choice adds the valid-grounding ratio (both box rules) and, with `--base`, the crop-alone ratio.

A malformed record is reported with its id and skipped. Results are written in the shape lmms-eval writes
(`results` per task and subtask, `n-samples`, `config`) beside a per-sample log, so runs can be diffed with
theirs; a table goes to the terminal.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mgpo.data.loaders import (
    Problem,
    load_fsc147,
    load_mig_bench,
    load_mme_realworld,
    load_pixmo,
    load_synthetic,
    load_vstar,
    vstar_shuffles,
)
from mgpo.images import ImageStore
from mgpo.records import PromptRecord, TaskKind
from mgpo.resize import PixelBudget
from mgpo.rewards import last_boxed
from recipes.evaluate import eval_spec, evaluate_records

BENCHES = ("vstar", "mme-realworld", "mig-bench", "pixmo", "fsc147", "synthetic")
SINGLE = "single"  # grounding and counting are one turn whatever the mode


def natural_mode(kind: TaskKind | None) -> str:
    """MGPO for multiple choice; one turn for grounding and counting."""
    return "mgpo" if kind is TaskKind.MULTIPLE_CHOICE else SINGLE


def load(
    bench: str, path: str, store: ImageStore, image_root: str | None, seed: int
) -> tuple[list[PromptRecord], list[Problem]]:
    """The benchmark's records (images put in `store`) and its malformed records."""
    loaders: dict[str, Callable[[], Iterable[PromptRecord | Problem]]] = {
        "vstar": lambda: load_vstar(path, store, seed),
        "mme-realworld": lambda: load_mme_realworld(path, store, image_root),
        "mig-bench": lambda: load_mig_bench(path, store),
        "pixmo": lambda: load_pixmo(path, store),
        "fsc147": lambda: load_fsc147(path, store),
        "synthetic": lambda: load_synthetic(path, store),
    }
    if bench not in loaders:
        raise ValueError(f"unknown benchmark {bench!r}; choose one of {', '.join(BENCHES)}")
    items = list(loaders[bench]())
    return [r for r in items if isinstance(r, PromptRecord)], [p for p in items if isinstance(p, Problem)]


def _groups(bench: str, category: str) -> list[str]:
    """The subtasks a row counts in, named as lmms-eval names subtasks (`<bench>_<group>`)."""
    if bench == "mme-realworld":  # "Task/Subtask/Category": per task and per task/subtask
        parts = [p for p in category.split("/") if p]
        return [f"{bench}_{'/'.join(parts[:depth])}" for depth in (1, 2) if len(parts) >= depth]
    if bench in ("vstar", "mig-bench", "synthetic") and category:
        return [f"{bench}_{category}"]
    return []


def _scores(rows: Sequence[dict], kind: TaskKind | None) -> dict[str, float]:
    n = max(1, len(rows))
    out = {"accuracy,none": sum(bool(r["correct"]) for r in rows) / n, "samples": len(rows)}
    if kind is TaskKind.MULTIPLE_CHOICE:
        out["valid_grounding_ratio,none"] = sum(bool(r["valid_grounding"]) for r in rows) / n
        out["valid_grounding_lenient_ratio,none"] = sum(bool(r["valid_grounding_lenient"]) for r in rows) / n
        if rows and "crop_alone_correct" in rows[0]:
            out["crop_alone_ratio,none"] = sum(bool(r["crop_alone_correct"]) for r in rows) / n
    if kind is TaskKind.MULTI_IMAGE_GROUNDING:
        out["mean_iou,none"] = sum(float(r["iou"]) for r in rows) / n
    return out


def results(bench: str, rows: Sequence[dict], kind: TaskKind | None) -> dict[str, dict]:
    """lmms-eval's `results`: the benchmark's overall line first, then one per subtask."""
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        for group in _groups(bench, str(r["category"])):
            by_group[group].append(r)
    out = {bench: {"alias": bench, **_scores(rows, kind)}}
    for group in sorted(by_group):
        out[group] = {"alias": f" - {group.removeprefix(bench + '_')}", **_scores(by_group[group], kind)}
    if bench == "mig-bench" and by_group:  # the unweighted mean of the tasks, as MIG-Bench reports
        tasks = [out[g]["accuracy,none"] for g in by_group]
        out[bench]["accuracy,none"] = sum(tasks) / len(tasks)
        out[bench]["micro_accuracy,none"] = _scores(rows, kind)["accuracy,none"]
    return out


def _sample_line(index: int, record: PromptRecord, r: dict) -> dict:
    """One line of the per-sample log, in lmms-eval's `samples_<task>.jsonl` shape."""
    reply = r["text"][-1] if r["text"] else ""
    return {
        "doc_id": index,
        "doc": {"id": record.id, "question": record.question, "choices": list(record.choices)},
        "target": record.answer,
        "resps": [r["text"]],
        "filtered_resps": [last_boxed(reply) if record.kind is not TaskKind.MULTI_IMAGE_GROUNDING else reply],
        **{k: v for k, v in r.items() if k not in ("text", "id")},
    }


def print_table(bench: str, table: dict[str, dict], console: Console | None = None) -> None:
    columns = ["accuracy,none", "valid_grounding_ratio,none", "crop_alone_ratio,none", "mean_iou,none"]
    shown = [c for c in columns if any(c in v for v in table.values())]
    grid = Table(title=f"{bench}")
    grid.add_column("task")
    grid.add_column("n", justify="right")
    for c in shown:
        grid.add_column(c.removesuffix(",none"), justify="right")
    for scores in table.values():
        cells = [f"{scores[c]:.3f}" if c in scores else "" for c in shown]
        grid.add_row(scores["alias"], str(scores["samples"]), *cells)
    (console or Console()).print(grid)


def run_bench(
    bench: str,
    path: str,
    model: str,
    out: str,
    mode: str | None = None,
    base: str | None = None,
    image_root: str | None = None,
    engine: str = "hf",
    limit: int | None = None,
    seed: int = 0,
    budget: PixelBudget = PixelBudget(64 * 28 * 28, 256 * 28 * 28),
    max_turn_tokens: int = 64,
) -> dict[str, object]:
    """Evaluate `model` on the benchmark folder `path`; write `out` (results) and the per-sample log."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mgpo-bench-") as scratch:
        store = ImageStore(scratch)
        records, problems = load(bench, path, store, image_root, seed)
        for problem in problems:
            print(f"skipped {problem.id}: {problem.reason}", flush=True)
        records = records[:limit]
        if not records:
            raise ValueError(f"{path}: no usable {bench} record ({len(problems)} skipped)")
        kinds = {r.kind for r in records}
        kind = kinds.pop() if len(kinds) == 1 else None
        mode = mode or natural_mode(kind)
        if (kind is TaskKind.MULTIPLE_CHOICE) == (mode == SINGLE):
            wanted = "mgpo, grpo or multiturn" if kind is TaskKind.MULTIPLE_CHOICE else SINGLE
            raise ValueError(
                f"{bench} is {kind.value if kind else 'mixed'}: --mode {mode} does not apply, use {wanted}"
            )
        spec_mode = "mgpo" if mode == SINGLE else mode  # grounding and counting are one turn in any template
        spec = eval_spec(model, spec_mode, scratch, engine, budget, max_turn_tokens)
        rows = evaluate_records(spec, records, store, base if kind is TaskKind.MULTIPLE_CHOICE else None)
    table = results(bench, rows, kind)
    result = {
        "results": table,
        "n-samples": {bench: {"original": len(records) + len(problems), "effective": len(rows)}},
        "skipped": [{"id": p.id, "reason": p.reason} for p in problems],
        "config": {
            "model": "mgpo",
            "model_args": f"pretrained={model}",
            "bench": bench,
            "path": str(path),
            "mode": mode,
            "limit": limit,
            "options_shuffled": bench == "vstar" and vstar_shuffles(path),
            "seed": seed,
            "min_pixels": budget.min_pixels,
            "max_pixels": budget.max_pixels,
            "pre_shrink": budget.pre_shrink,
            "box_rule": spec.box_rule,
            "crop_alone_base": base,
        },
        "date": time.time(),
        "total_evaluation_time_seconds": str(round(time.perf_counter() - started, 1)),
    }
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    samples = out_path.with_name(f"{out_path.stem}_samples_{bench}.jsonl")
    with open(samples, "w") as f:
        for i, (record, r) in enumerate(zip(records, rows, strict=True)):
            f.write(json.dumps(_sample_line(i, record, r)) + "\n")
    print_table(bench, table)
    return {"results_file": str(out_path), "samples_file": str(samples), **table[bench]}
