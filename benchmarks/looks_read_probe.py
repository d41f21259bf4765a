"""Where a looks-set model reads: greedy accuracy per look (0, 1, 2) and prompt form, on held-out samples.

    .venv/bin/python benchmarks/looks_read_probe.py MODEL [--config configs/reproduce/looks-cold-start.yaml]
        [--n 60] [--out benchmarks/results/looks-read-probe.json]

Two forms per sample: the cold start's own reading examples (mgpo.cold_start.zoom_skill_examples: a look0
panel in the whole view, a look1 panel alone in a crop of its cell, a look2 tag in its cell inside the panel;
one image, or the whole view and then the close-up), and `mgpo data distill`'s direct asking (the whole view
alone, the recognition prompt). A model that reads a panel alone but not among the others in the whole view
shows it here. Not timed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learner.sft import greedy_replies, score  # noqa: E402
from mgpo.cold_start import RECOGNITION_PROMPT, RECOGNITION_SYSTEM, Example, zoom_skill_examples  # noqa: E402
from mgpo.crop import render_view  # noqa: E402
from mgpo.data.synth import synth_looks_sample  # noqa: E402
from mgpo.models.tiny import load_policy, load_processor  # noqa: E402
from mgpo.resize import PixelBudget  # noqa: E402
from mgpo.templates import IM_END, format_choices, single_prompt  # noqa: E402
from runtime.config import load_sft_config  # noqa: E402


def probe_examples(config_path: str, n: int) -> tuple[list[Example], list[str], PixelBudget]:
    """The reading examples of `n` held-out samples (the config's eval seed), each with its row name."""
    config = load_sft_config(config_path)
    knobs, budget = config.data.knobs(), PixelBudget(config.min_pixels, config.max_pixels)
    rng = random.Random(0)
    examples, rows = [], []
    for index in range(n):
        sample = synth_looks_sample(config.data.eval_seed, index, knobs)
        skills = zoom_skill_examples(
            sample, budget, config.box_cells, rng, 0.0, config.grounding_frames, config.whole_view_read_frames
        )
        for e in skills:
            if e.skill == "recognition":
                examples.append(e)
                rows.append(f"{sample.category}, cold-start form, {len(e.images)} image(s)")
        text = RECOGNITION_PROMPT.format(question=sample.question, choices=format_choices(sample.choices))
        view = render_view(sample.images[0], None, budget)
        reply = f"\\boxed{{{sample.answer}}}{IM_END}"
        examples.append(
            Example("recognition", single_prompt(text, 1, RECOGNITION_SYSTEM), (view,), reply, sample.answer)
        )
        rows.append(f"{sample.category}, distill's direct asking (whole view)")
    return examples, rows, budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--config", default=str(ROOT / "configs" / "reproduce" / "looks-cold-start.yaml"))
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "looks-read-probe.json"))
    args = parser.parse_args()
    examples, rows, budget = probe_examples(args.config, args.n)
    model, processor = load_policy(args.model).eval(), load_processor(args.model)
    replies = greedy_replies(model, processor, examples, budget)
    right: dict[str, list[float]] = defaultdict(list)
    for example, reply, row in zip(examples, replies, rows, strict=True):
        right[row].append(score(example, reply))
    table = {row: {"n": len(v), "accuracy": round(sum(v) / len(v), 3)} for row, v in sorted(right.items())}
    Path(args.out).write_text(
        json.dumps({"model": args.model, "config": args.config, "rows": table}, indent=1)
    )
    for row, cell in table.items():
        print(f"{row:55s} {cell['n']:4d} {cell['accuracy']:.2f}")


if __name__ == "__main__":
    main()
