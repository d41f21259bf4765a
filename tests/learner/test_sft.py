"""`mgpo sft` on the tiny model: the learning-rate schedule and resuming from a checkpoint."""

import json
import math
import random
import shutil

import pytest

from learner.sft import mixed_batch, run_sft
from runtime.config import SFTConfig


@pytest.mark.parametrize(
    ("shares", "size", "expected"),
    [((0.5, 0.5), 8, "ggggrrrr"), ((0.75, 0.25), 8, "ggggggrr"), ((2 / 3, 1 / 3), 12, "g" * 8 + "r" * 4)],
)
def test_a_batch_holds_each_skills_share(shares, size, expected):
    batch = mixed_batch([["g"] * 3, ["r"] * 50], shares, size, random.Random(0))
    assert "".join(batch) == expected


def test_a_skill_with_no_examples_leaves_the_whole_batch_to_the_other():
    assert mixed_batch([[], ["r"]], (0.75, 0.25), 4, random.Random(0)) == ["r"] * 4


def test_a_format_share_adds_turn_1_format_examples_to_training_never_to_the_held_out_set():
    from learner.sft import _examples
    from mgpo.resize import PixelBudget

    data = {"train_n": 3, "eval_n": 2, "min_side": 512, "max_side": 512, "clutter": 0}
    config = SFTConfig.model_validate(
        {"data": data, "grounding_share": 2 / 3, "format_share": 1 / 12, "batch": 12}
    )
    by_skill, shares, held_out = _examples(config, PixelBudget(config.min_pixels, config.max_pixels))
    assert [len(pool) for pool in by_skill] == [12, 12, 3]  # 4 tags x 3 samples; one format example each
    assert {e.skill for e in by_skill[2]} == {"format"} and {e.skill for e in held_out} == {
        "grounding",
        "recognition",
    }
    batch = mixed_batch([["g"] * 9, ["r"] * 9, ["f"] * 9], shares, 12, random.Random(0))
    assert "".join(batch) == "g" * 7 + "r" * 4 + "f"


def test_format_in_panel_adds_a_look2_questions_format_example_in_its_panels_view():
    from learner.sft import _examples
    from mgpo.resize import PixelBudget

    data = {"task": "looks", "train_n": 6, "eval_n": 1, "looks": (2,), "min_side": 2048, "max_side": 2048}
    data |= {"grid": 4, "stripe_width": 1, "clutter": 0, "position_cue": True}
    common = {"data": data, "format_share": 0.1, "min_pixels": 50176, "max_pixels": 50176}
    for in_panel, per_sample in ((False, 1), (True, 2)):
        config = SFTConfig.model_validate({**common, "format_in_panel": in_panel})
        by_skill, _, _ = _examples(config, PixelBudget(config.min_pixels, config.max_pixels))
        formats = by_skill[2]
        assert len(formats) == 6 * per_sample and {e.skill for e in formats} == {"format"}
        assert {e.images[0].size for e in formats} == {(224, 224)}
    with pytest.raises(ValueError, match="format_in_panel is for data.task: looks"):
        SFTConfig.model_validate({"data": {"train_n": 1, "eval_n": 1}, "format_in_panel": True})


def test_a_direct_share_without_a_distilled_folder_is_refused():
    from learner.sft import _examples
    from mgpo.resize import PixelBudget

    config = SFTConfig.model_validate({"data": {"train_n": 1, "eval_n": 1}, "direct_share": 0.5})
    with pytest.raises(ValueError, match="direct_share: needs data.path, a distilled folder"):
        _examples(config, PixelBudget(config.min_pixels, config.max_pixels))


def _lrs(run_dir) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {m["step"]: m["lr"] for m in map(json.loads, lines) if m["kind"] == "train"}


@pytest.mark.slow
def test_the_lr_warms_up_decays_to_its_floor_and_resumes_where_it_stopped(tmp_path):
    config = SFTConfig.model_validate(
        {
            "output_dir": str(tmp_path / "full"),
            "model": {"path": "tiny", "tiny_size": "xs", "tiny_tokenizer": "small"},
            "data": {"train_n": 2, "eval_n": 1, "min_side": 512, "max_side": 512, "clutter": 0},
            "steps": 5,
            "batch": 2,
            "lr": 1e-3,
            "lr_warmup_steps": 1,
            "lr_decay_steps": 4,
            "lr_min_ratio": 0.1,
            "eval_every": 5,
            "checkpoint_every": 2,
            "keep_checkpoints": 3,
        }
    )
    run_sft(config)
    full = _lrs(config.run_dir)
    # Logged after each step's update: step s trained with lr(s - 1), the log shows lr(s).
    cosine = [1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 4))) for s in range(1, 6)]
    assert list(full) == [1, 2, 3, 4, 5]
    assert list(full.values()) == pytest.approx(cosine)
    assert full[5] == pytest.approx(1e-4)

    # A run stopped after its step-2 checkpoint goes on with the same schedule, not a new warm-up.
    cut = config.model_copy(update={"output_dir": str(tmp_path / "cut")})
    (cut.run_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(config.run_dir / "model-init", cut.run_dir / "model-init")
    shutil.copytree(
        config.run_dir / "checkpoints" / "step-000002", cut.run_dir / "checkpoints" / "step-000002"
    )
    summary = run_sft(cut, resume=True)
    assert summary["steps"] == 5
    resumed = _lrs(cut.run_dir)
    assert list(resumed) == [3, 4, 5]
    assert list(resumed.values()) == pytest.approx([full[3], full[4], full[5]])

    # A checkpoint from before the schedule existed is refused with the way out, not a bare missing file.
    (cut.run_dir / "checkpoints" / "step-000005" / "schedule.pt").unlink()
    with pytest.raises(FileNotFoundError, match="run without --resume"):
        run_sft(cut, resume=True)


@pytest.mark.slow
def test_the_decision_weight_counts_each_turns_first_token_that_many_times(tiny_small):
    import torch

    from learner.sft import _examples, train_step
    from mgpo.models.tiny import load_policy, load_processor
    from mgpo.resize import PixelBudget

    config = SFTConfig.model_validate({"data": {"train_n": 1, "eval_n": 2, "clutter": 0}})
    budget = PixelBudget(config.min_pixels, config.max_pixels)
    batch = _examples(config, budget)[2][:4]
    model, processor = load_policy(tiny_small).eval(), load_processor(tiny_small)

    def loss(weight: float) -> float:
        model.zero_grad()
        return train_step(model, processor, batch, budget, weight)

    plain, near = loss(1.0), loss(1.0 + 1e-6)  # transformers' own loss, and ours at (almost) the same weight
    assert near == pytest.approx(plain, rel=1e-4)
    double, triple = loss(2.0), loss(3.0)
    # each extra unit of weight adds the first tokens' summed cross-entropy / the trained tokens, once more
    assert double > plain and triple - plain == pytest.approx(2 * (double - plain), rel=1e-3)
    assert torch.isfinite(next(model.parameters()).grad).all()
