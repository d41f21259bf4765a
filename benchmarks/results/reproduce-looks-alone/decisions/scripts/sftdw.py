import sys
from pathlib import Path

sys.path.insert(0, ".")
import recipes.reproduce_looks as R
from recipes.stages import Stages

R.CONFIGS = Path("/tmp/alone/configs")
root, plan = Path("out/looks-alone"), R.LooksPlan(False)
stages = Stages(root)
name, weight = sys.argv[1], float(sys.argv[2])
mgpo = root / "looks-mgpo12" / "final"
sft = R._sft(
    name,
    root,
    plan,
    {
        "name": name,
        "decision_weight": weight,
        "model": {"path": str(mgpo)},
        "data": {"path": str(root / "distilled12"), "eval_n": 8},
    },
    stages,
    source="looks-sft",
)
print("SFT", sft)
