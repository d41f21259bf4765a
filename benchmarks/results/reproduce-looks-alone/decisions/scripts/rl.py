"""Multi-turn RL from SFT12 with a variant: rl.py NAME key=value ... (rollout./learner. keys); then its eval."""

import sys
from pathlib import Path

sys.path.insert(0, ".")
import yaml

import recipes.reproduce_looks as R
from recipes.stages import Stages, run_mgpo, train_stage

root = Path("out/looks-alone")
stages = Stages(root)
name = sys.argv[1]
changes = {
    "model": {
        "path": str(
            root / (sys.argv[2] if len(sys.argv) > 2 and "=" not in sys.argv[2] else "looks-sft12") / "model"
        )
    },
    "data": {"path": str(root / "data" / "train")},
}
for kv in [a for a in sys.argv[2:] if "=" in a]:
    key, value = kv.split("=")
    section, field = key.split(".")
    changes.setdefault(section, {})[field] = yaml.safe_load(value)
final = train_stage(
    stages, f"train-{name}", Path("configs/reproduce/looks-multiturn.yaml"), root, name, changes
)
out = root / "eval12" / f"{name}.json"
stages.run(
    f"eval-{name}",
    out,
    lambda: run_mgpo(
        "eval",
        "--model",
        str(final),
        "--data",
        str(root / "data" / "test"),
        "--mode",
        "multiturn",
        "--max-crops",
        "2",
        "--out",
        str(out),
        *R.BUDGET,
    ),
)
