"""Rebuild the look0-alone trial up to the SFT model: data, cold start, settle, MGPO on look1/look2."""

import dataclasses
import shutil
import sys
from pathlib import Path

sys.path.insert(0, ".")
import recipes.reproduce_looks as R
from mgpo.data.dataset import META_FILE, write_synthetic
from recipes.stages import CONFIGS, Stages, settle_changes, train_stage
from runtime.config import load_sft_config

configs = Path("/tmp/alone/configs")
if not configs.exists():
    shutil.copytree(CONFIGS, configs)
    shutil.copy(
        "benchmarks/results/reproduce-looks-alone/looks-cold-start.yaml",
        configs / "reproduce" / "looks-cold-start.yaml",
    )
R.CONFIGS = configs
root, plan = Path("out/looks-alone"), R.LooksPlan(False)
stages = Stages(root)
knobs = load_sft_config(configs / "reproduce" / "looks-cold-start.yaml").data.knobs()
data = R._splits(root, plan, stages, knobs)
train12 = root / "data" / "train12"
stages.run(
    "data-train12",
    train12 / META_FILE,
    lambda: write_synthetic(
        train12, 128, 2100, task="looks", knobs=dataclasses.replace(knobs, looks=(1, 2)), progress=False
    ),
)
cold = R._sft("looks-cold-start", root, plan, {}, stages)
settled = R._sft(
    "looks-settle", root, plan, settle_changes(cold, name="looks-settle"), stages, source="looks-cold-start"
)
mgpo = train_stage(
    stages,
    "train-looks-mgpo12",
    configs / "reproduce" / "looks-mgpo.yaml",
    root,
    "looks-mgpo12",
    {"model": {"path": str(settled)}, "data": {"path": str(train12)}},
)
print("MGPO12", mgpo)
