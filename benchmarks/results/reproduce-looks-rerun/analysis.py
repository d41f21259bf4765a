"""A looks run's second looks and the teacher's pass rates by the answer's value.

python analysis.py FOLDER [DATA]  (FOLDER: eval/*.jsonl, rates.jsonl; DATA: the distill split, whose
records give each question's answer value: out/RUN/data/distill)
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

here = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
for policy in ("sft", "multiturn"):
    rows = [json.loads(line) for line in (here / "eval" / f"{policy}.jsonl").read_text().splitlines()]
    twice = [r for r in rows if r["category"] == "look2" and r["crop_of_crops"]]
    first = [r for r in twice if r["crop_holds_target"]]
    second = [r for r in twice if r["last_crop_holds_target"]]
    look2 = [r for r in rows if r["category"] == "look2"]
    print(
        f"{policy:9s} look2 cropped twice: {len(twice):3d}  first crop holds the tag {len(first):3d}  "
        f"second {len(second):3d}  right when it does {sum(r['correct'] for r in second)}/{len(second)}  "
        f"look2 accuracy {sum(r['correct'] for r in look2) / len(look2):.2f}"
    )
if len(sys.argv) > 2:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from mgpo.data.dataset import read_prompts

    values = {r.id: r.choices["ABCD".index(r.answer)] for r in read_prompts(sys.argv[2])}
    groups = defaultdict(list)
    for r in map(json.loads, (here / "rates.jsonl").read_text().splitlines()):
        groups[(r["category"], values[r["id"]])].append(r)
    print("\nmean pass rates by category and answer value (the teacher's crop, the reader's direct/blind)")
    for (category, value), rs in sorted(groups.items()):
        means = {w: statistics.mean(r[w] for r in rs) for w in ("crop", "direct", "blind", "letter")}
        blinds = [r["crop_blind"] for r in rs if r.get("crop_blind") is not None]
        after = f"  crop blurred {statistics.mean(blinds):.2f} ({len(blinds)} asked)" if blinds else ""
        print(f"{category} {value:17s} {len(rs):3d}  " + "  ".join(f"{w} {v:.2f}" for w, v in means.items()) + after)
