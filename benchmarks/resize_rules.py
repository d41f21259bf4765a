"""How far the MGPO reference's input frame (NEAREST pre-shrink, then the processor) is from ours.

For V*-sized originals (SA-1B photos, about 1500-6000 px a side, 2246x1582 on average) at the paper's
budget, compare the model input size of the two rules: how often they differ, by how many visual tokens,
how much each distorts the aspect ratio, and how far a point in the original lands apart in the input.

    .venv/bin/python benchmarks/resize_rules.py   # -> benchmarks/results/resize_rules.json
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from mgpo.resize import FACTOR, PixelBudget, input_size, num_visual_tokens

OURS = PixelBudget(256 * FACTOR * FACTOR, 1280 * FACTOR * FACTOR)
REFERENCE = PixelBudget(OURS.min_pixels, OURS.max_pixels, pre_shrink=True)
ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9)
OUT = Path(__file__).parent / "results" / "resize_rules.json"


def sizes() -> list[tuple[int, int]]:
    """Long sides 1500-6000 px every 50 px, four aspect ratios, both orientations, plus V*'s mean size."""
    out = {(2246, 1582)}
    for long_side in range(1500, 6001, 50):
        for aspect in ASPECTS:
            short = round(long_side / aspect)
            out |= {(long_side, short), (short, long_side)}
    return sorted(out)


def compare(width: int, height: int) -> dict[str, float]:
    ours, ref = input_size(width, height, OURS), input_size(width, height, REFERENCE)
    aspect = width / height
    return {
        "differs": float(ours != ref),
        "token_gap": float(num_visual_tokens(*ref) - num_visual_tokens(*ours)),
        "ours_aspect_error": abs(ours[0] / ours[1] / aspect - 1),
        "reference_aspect_error": abs(ref[0] / ref[1] / aspect - 1),
        # a point at the original's far corner, in input pixels under each rule
        "corner_shift_px": max(abs(ours[0] - ref[0]), abs(ours[1] - ref[1])),
    }


def main() -> dict[str, object]:
    rows = [compare(w, h) for w, h in sizes()]
    over = [r for (w, h), r in zip(sizes(), rows, strict=True) if w * h > OURS.max_pixels]
    result = {
        "budget": {"min_pixels": OURS.min_pixels, "max_pixels": OURS.max_pixels},
        "sizes": len(rows),
        "share_different_input": statistics.fmean(r["differs"] for r in over),
        "mean_abs_token_gap": statistics.fmean(abs(r["token_gap"]) for r in over),
        "max_abs_token_gap": max(abs(r["token_gap"]) for r in over),
        "mean_aspect_error_ours": statistics.fmean(r["ours_aspect_error"] for r in over),
        "mean_aspect_error_reference": statistics.fmean(r["reference_aspect_error"] for r in over),
        "max_corner_shift_px": max(r["corner_shift_px"] for r in over),
        "example_4000x3000": {
            "ours": input_size(4000, 3000, OURS),
            "reference": input_size(4000, 3000, REFERENCE),
        },
        "example_2246x1582": {
            "ours": input_size(2246, 1582, OURS),
            "reference": input_size(2246, 1582, REFERENCE),
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
