"""Look2 test questions of each policy by how it looked: count, accuracy, first crop holding the tag."""

import json
import sys
from collections import defaultdict
from pathlib import Path

here = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
for policy in ("mgpo", "sft", "multiturn"):
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in map(json.loads, (here / "eval" / f"{policy}.jsonl").read_text().splitlines()):
        if row["category"] == "look2":
            way = "direct" if row["direct"] else ("crop of a crop" if row["crop_of_crops"] else "one crop")
            groups[way].append(row)
    for way, rows in sorted(groups.items()):
        right = sum(r["correct"] for r in rows) / len(rows)
        holds = sum(bool(r["crop_holds_target"]) for r in rows) / len(rows)
        print(
            f"{policy:9s} look2 {way:15s} {len(rows):3d}  accuracy {right:.2f}  first crop holds the tag {holds:.2f}"
        )
