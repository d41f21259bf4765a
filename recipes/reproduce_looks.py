"""`mgpo reproduce --experiment multiturn`: MGPO's two turns against a policy that decides when to look.

1. Train and test splits of the looks set, made as the cold start's (its config's `data` knobs: 2048-px
   images, a 4 x 4 grid, the finest stripes 1 px, options in a fixed order, so `mgpo data distill
   --keep-option-order`): questions that need 0, 1 or 2 crops; the distill split is the train split's
   questions and more of the same seed.
2. The looks set's own cold start (configs/reproduce/looks-cold-start.yaml): grounding and reading at every
   zoom, never the combined task; its settle (configs/reproduce/settle.yaml over it: the turn-1 format
   examples' boxes on the question's tag, as in `mgpo reproduce`); then MGPO RL (looks-mgpo.yaml) from it
   on questions that need a crop (MGPO_LOOKS): the two-turn policy, the teacher of the crops.
3. `mgpo data distill` from it: each distill question's way the policy solves it (no crop where the settle,
   its reader, reads the detail from the whole image better than a guess and than the policy's crop, else
   a crop that beats a guess after the crop, else a crop of the crop) in the multi-turn format.
4. `mgpo sft` (looks-sft.yaml) of the MGPO policy on those paths: the autonomous format.
5. Multi-turn RL (looks-multiturn.yaml) from there: same steps, prompts and settings as stage 2.
6. `mgpo eval` on the test split: MGPO in its two turns, the SFT and RL policies in the multi-turn mode
   (`max_crops` 2), per category: accuracy, crops per question, direct answers, crops of a crop, image tokens.

Stages are skipped when their output exists (a stopped experiment resumes), as in `recipes.reproduce`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mgpo.data.dataset import META_FILE, write_synthetic
from mgpo.data.synth import SynthKnobs
from recipes.distill import MAX_CROPS
from recipes.stages import CONFIGS, Stages, run_mgpo, settle_changes, train_stage, write_config
from runtime.config import load_sft_config

BUDGET = ("--min-pixels", "50176", "--max-pixels", "50176")
# MGPO trains on questions that need a crop: on all three categories, once look0 read in the whole view,
# answering in turn 1 paid and MGPO dropped its boxes (valid grounding 0.20 -> 0.01), leaving no crop to
# distill; on look1/look2 alone it kept them (README, Results). Its train split: the same seed, these looks.
MGPO_LOOKS = (1, 2)
MODES = {
    "mgpo": ("mgpo", "1"),
    "sft": ("multiturn", str(MAX_CROPS)),
    "multiturn": ("multiturn", str(MAX_CROPS)),
}


class LooksPlan:
    def __init__(self, smoke: bool) -> None:
        # 300 test questions: at 48 (15 look1) one question moved a category's decision share by 0.07
        self.train_n, self.test_n = (6, 3) if smoke else (128, 300)
        # Distillation reads the train questions and more of the same seed (the first `train_n` are the
        # train split's): from 128, SFT saw 68 paths ~35 times each and answered 0.14 of look1 directly;
        # from 384 (214 paths), 0.06. From 1024 (612 paths, 73 of them two crops against 25), SFT + RL
        # asks to look on every look2 question (0.43 from 384) and crops a crop only there (README, Results)
        self.distill_questions = 6 if smoke else 1024
        self.rl_steps = 2 if smoke else None  # None: the config's
        self.sft_steps = 2 if smoke else None
        # 16 askings: a guess (1 in 4) clears a 0.5 bar 3% of the time, a 0.6 reader 86% (at 8: 11%, 83%)
        self.distill_n = 2 if smoke else 16
        self.sft_eval_n = 1 if smoke else 8  # held-out paths (looks-sft.yaml's data.eval_n)


def reproduce_looks(out: str = "out/reproduce-looks", smoke: bool = False) -> dict[str, object]:
    root, plan = Path(out), LooksPlan(smoke)
    stages = Stages(root)
    knobs = load_sft_config(CONFIGS / "reproduce" / "looks-cold-start.yaml").data.knobs()
    data = _splits(root, plan, stages, knobs)
    small = {"train_n": 4, "eval_n": 2} if smoke else {}
    cold_start = _sft("looks-cold-start", root, plan, {"data": small}, stages)
    settle = settle_changes(cold_start, name="looks-settle", data=small)
    settled = _sft("looks-settle", root, plan, settle, stages, source="looks-cold-start")
    mgpo = _rl("looks-mgpo", root, plan, settled, data["mgpo"], stages)
    distilled = root / "distilled"
    command = ("data", "distill", "--model", str(mgpo), "--data", str(data["distill"]))
    command += ("--out", str(distilled), "--n", str(plan.distill_n), *BUDGET)
    # where no crop is needed, the settle says: MGPO on crops alone wore its policy's reading of the whole
    # view down (look0 diagonal stripes, settle 0.86-1.00 -> MGPO 0.35-0.67; README, Results), and its
    # direct paths restore that reading in the student
    command += ("--reader", str(settled))
    if not knobs.shuffle_options:  # a policy that learned fixed orders is asked in them
        command += ("--keep-option-order",)
    stages.run("distill", distilled / "distill.json", lambda: run_mgpo(*command))
    distill = json.loads((distilled / "distill.json").read_text())
    models = {"mgpo": mgpo}
    if sum(distill["looks"].values()) > plan.sft_eval_n:  # else nothing to train on: the table says so
        data_changes = {"path": str(distilled), "eval_n": plan.sft_eval_n}
        models["sft"] = _sft(
            "looks-sft", root, plan, {"model": {"path": str(mgpo)}, "data": data_changes}, stages
        )
        models["multiturn"] = _rl("looks-multiturn", root, plan, models["sft"], data["train"], stages)
    results = {name: _eval(name, model, data["test"], root, stages) for name, model in models.items()}
    table = results_table(results, distill)
    (root / "results.md").write_text(table)
    print(table, flush=True)
    return {"results": results, "distill": distill, "timings": stages.timings}


def _splits(root: Path, plan: LooksPlan, stages: Stages, knobs: SynthKnobs) -> dict[str, Path]:
    data = {split: root / "data" / split for split in ("train", "test", "mgpo", "distill")}
    crops = dataclasses.replace(knobs, looks=MGPO_LOOKS)
    splits = (
        ("train", 2100, plan.train_n, knobs),
        ("test", 2200, plan.test_n, knobs),
        ("mgpo", 2100, plan.train_n, crops),
        ("distill", 2100, plan.distill_questions, knobs),
    )
    for split, seed, n, split_knobs in splits:
        stages.run(
            f"data-{split}",
            data[split] / META_FILE,
            lambda split=split, seed=seed, n=n, split_knobs=split_knobs: write_synthetic(
                data[split], n, seed, task="looks", knobs=split_knobs, progress=True
            ),
        )
    return data


def _rl(name: str, root: Path, plan: LooksPlan, model: Path, train: Path, stages: Stages) -> Path:
    changes: dict = {"model": {"path": str(model)}, "data": {"path": str(train)}}
    if plan.rl_steps:
        changes["steps"] = plan.rl_steps
    return train_stage(stages, f"train-{name}", CONFIGS / "reproduce" / f"{name}.yaml", root, name, changes)


def _sft(
    name: str, root: Path, plan: LooksPlan, changes: dict, stages: Stages, source: str | None = None
) -> Path:
    """`mgpo sft` with configs/reproduce/SOURCE.yaml (default NAME) and `changes`; the trained model's
    folder."""
    changes = {"output_dir": str(root), **changes}
    if plan.sft_steps:
        steps = plan.sft_steps
        changes |= {"steps": steps, "eval_every": steps, "checkpoint_every": steps}
        changes |= {"lr_warmup_steps": 0, "lr_decay_steps": 0}
    config = CONFIGS / "reproduce" / f"{source or name}.yaml"
    path = write_config(config, root / "configs" / f"{name}.yaml", changes)
    sft = load_sft_config(path)
    stages.run(name, sft.run_dir / "summary.json", lambda: run_mgpo("sft", "--config", str(path), "--resume"))
    return sft.run_dir / "model"


def _eval(name: str, model: Path, test: Path, root: Path, stages: Stages) -> dict[str, object]:
    out = root / "eval" / f"{name}.json"
    mode, crops = MODES[name]
    command = ("eval", "--model", str(model), "--data", str(test), "--mode", mode, "--max-crops", crops)
    stages.run(f"eval-{name}", out, lambda: run_mgpo(*command, "--out", str(out), *BUDGET))
    return json.loads(out.read_text())


def results_table(results: dict[str, dict], distill: dict[str, object]) -> str:
    """Markdown: per policy and question category, accuracy and how it looked; what distillation kept."""
    names = {
        "mgpo": "MGPO (two turns)",
        "sft": "distilled SFT (multi-turn)",
        "multiturn": "distilled SFT + multi-turn RL",
    }
    head = "| policy | questions | accuracy | crops / question | direct answers | crops of a crop | image tokens / question |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for key, title in names.items():
        if key not in results:
            lines.append(f"| {title} | - | - | - | - | - | skipped: distillation kept too few paths |")
            continue
        r = results[key]
        for category, c in [("all", r), *sorted(r.get("categories", {}).items())]:
            lines.append(
                f"| {title} | {category} ({c['questions']}) | {c['accuracy']:.3f} | {c['crops_per_question']:.2f} "
                f"| {c['direct_answer_ratio']:.2f} | {c['crop_of_crop_ratio']:.2f} | {c['image_tokens_per_question']:.0f} |"
            )
    looks = ", ".join(f"{k}: {v}" for k, v in distill["looks"].items())  # type: ignore[union-attr]
    lines.append(
        f"\nDistillation kept paths for {looks} of {distill['questions']} train questions (per category: "
        f"{json.dumps(distill['by_category'])})."
    )
    return "\n".join(lines) + "\n"
