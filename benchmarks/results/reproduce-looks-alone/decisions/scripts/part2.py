"""Distill from MGPO12 on all categories, SFT, eval SFT and MGPO12."""

import sys
from pathlib import Path

sys.path.insert(0, ".")
import recipes.reproduce_looks as R
from recipes.stages import Stages, run_mgpo

R.CONFIGS = Path("/tmp/alone/configs")
root, plan = Path("out/looks-alone"), R.LooksPlan(False)
stages = Stages(root)
mgpo = root / "looks-mgpo12" / "final"
distilled = root / "distilled12"
cmd = (
    "data",
    "distill",
    "--model",
    str(mgpo),
    "--data",
    str(root / "data" / "train"),
    "--out",
    str(distilled),
    "--n",
    "16",
    *R.BUDGET,
    "--keep-option-order",
)
stages.run("distill12", distilled / "distill.json", lambda: run_mgpo(*cmd))
sft = R._sft(
    "looks-sft12",
    root,
    plan,
    {"name": "looks-sft12", "model": {"path": str(mgpo)}, "data": {"path": str(distilled), "eval_n": 8}},
    stages,
    source="looks-sft",
)
for name, model in (("mgpo", mgpo), ("sft", sft)):
    out = root / "eval12" / f"{name}.json"
    mode, crops = R.MODES[name]
    test = str(root / "data" / "test")
    command = ("eval", "--model", str(model), "--data", test, "--mode", mode, "--max-crops", crops)
    stages.run(f"eval12-{name}", out, lambda c=command, o=out: run_mgpo(*c, "--out", str(o), *R.BUDGET))
print("SFT12", sft)
