"""A checkpoint is resumed only by a learner of its own shape (ranks, ZeRO stage, LoRA)."""

import pytest

from learner.checkpoint import check_layout

TWO_RANKS = {"world_size": 2, "zero_stage": 3, "lora": False}


def test_a_checkpoint_of_another_learner_shape_is_refused_saying_both():
    with pytest.raises(ValueError) as err:
        check_layout(
            TWO_RANKS, {"world_size": 1, "zero_stage": 1, "lora": False}, "runs/x/checkpoints/step-000010"
        )
    message = str(err.value)
    assert "written by a learner of lora False, world_size 2, zero_stage 3" in message
    assert "this run's is lora False, world_size 1, zero_stage 1" in message
    assert "resume with the same learner.world_size" in message


def test_the_same_shape_and_older_checkpoints_without_one_resume():
    check_layout(TWO_RANKS, dict(TWO_RANKS), "f")
    check_layout(None, TWO_RANKS, "f")  # written before the layout was recorded
