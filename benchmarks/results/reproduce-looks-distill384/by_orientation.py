"""Decisions per category and stripe orientation, from `mgpo eval` per-question files (EVAL.jsonl) and
each question's distill rates: by_orientation.py DATA_DIR EVAL.jsonl ... [--rates RATES.jsonl DISTILL_DATA]

Options are in a fixed order (A horizontal, B vertical, C diagonal rising, D diagonal falling), so the answer
letter is the orientation. Prints, per category and letter: questions, answered directly, right.
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path


def _rows(file: Path) -> list[dict]:
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def decisions(file: Path) -> dict[tuple[str, str], list[int]]:
    """(category, answer) -> [questions, answered directly, right]."""
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in _rows(file):
        cell = out[(r["category"], r["answer"])]
        cell[0] += 1
        cell[1] += bool(r["direct"])
        cell[2] += bool(r["correct"])
    return out


def rates(file: Path, data: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(category, answer) -> the distill pass rates' means (direct, crop, blind)."""
    answers = {r["id"]: r["answer"] for r in _rows(data / "prompts.jsonl")}
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in _rows(file):
        cells[(r["category"], answers[r["id"]])].append(r)
    return {
        k: {way: round(sum(r[way] for r in v) / len(v), 2) for way in ("direct", "crop", "blind")}
        for k, v in cells.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("evals", nargs="+", type=Path)
    parser.add_argument("--rates", nargs=2, type=Path, metavar=("RATES", "DATA"))
    args = parser.parse_args()
    for file in args.evals:
        cells = sorted(decisions(file).items())
        print(file.stem, " ".join(f"{c[-1]}{a}: {n[1]}/{n[0]} direct, {n[2]} right" for (c, a), n in cells))
    if args.rates:
        for (c, a), r in sorted(rates(*args.rates).items()):
            print(c, a, r)


if __name__ == "__main__":
    main()
