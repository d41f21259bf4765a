"""`mgpo data check`: read a dataset folder in a published layout and summarise it; bad records are listed."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from typing import Any

from mgpo.data.loaders import LOADERS, Problem
from mgpo.images import ImageStore

MAX_LISTED_PROBLEMS = 50


def check_dataset(fmt: str, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load every record of `path` as format `fmt`; count records, tasks and categories, collect problems."""
    if fmt not in LOADERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(LOADERS)}")
    counts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    problems: list[dict[str, str]] = []
    n_problems = 0
    with tempfile.TemporaryDirectory(prefix="mgpo-check-") as scratch:
        try:
            items = list(LOADERS[fmt](path, ImageStore(scratch)))
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            # a layout so unlike the published one that the loader cannot even list its records
            raise ValueError(f"{path} does not have the {fmt} layout: {err!r}") from err
        for item in items:
            if isinstance(item, Problem):
                n_problems += 1
                if len(problems) < MAX_LISTED_PROBLEMS:
                    problems.append({"id": item.id, "problem": item.reason})
                continue
            counts[item.category] += 1
            kinds[item.kind.value] += 1
    return {
        "format": fmt,
        "path": str(path),
        "count": sum(counts.values()),
        "kinds": dict(kinds),
        "categories": dict(sorted(counts.items())),
        "problems": n_problems,
        "problem_list": problems,
        "ok": n_problems == 0 and sum(counts.values()) > 0,
    }
