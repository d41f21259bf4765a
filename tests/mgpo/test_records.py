import msgpack
import numpy as np
import pytest

from mgpo.boxes import Box
from mgpo.crop import View
from mgpo.records import PromptRecord, RecordError, TaskKind, TrajectoryGroup, TrajectorySample


def _group() -> TrajectoryGroup:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        n = 300 + i
        mask = rng.random(n) > 0.5
        samples.append(
            TrajectorySample(
                ids=rng.integers(0, 151_936, n).astype(np.int32),
                loss_mask=mask,
                logprobs=np.where(mask, -rng.random(n), 0).astype(np.float32),
                views=(View("a" * 64), View("a" * 64, Box(10, 20, 300, 400))),
                reward=float(i % 2),
                valid_grounding=i != 3,
                turns=2,
                finish_reason="stop",
                text=("turn one", "turn two"),
                valid_grounding_lenient=i != 2,
                answer_iou=0.25 if i == 1 else None,
                right_image=True if i == 1 else None,
                answer_image=2 if i == 1 else None,
                answer_box=Box(0.125, 0.25, 0.5, 0.75) if i == 1 else None,
            )
        )
    return TrajectoryGroup("g-1", "p-1", 7, tuple(samples), 200704, 1003520, "actor-0", {"generate_s": 0.5})


def test_trajectory_group_round_trips_bit_exactly():
    group = _group()
    back = TrajectoryGroup.from_bytes(group.to_bytes())
    assert (back.id, back.prompt_id, back.policy_version, back.actor, back.timings) == (
        "g-1",
        "p-1",
        7,
        "actor-0",
        {"generate_s": 0.5},
    )
    for a, b in zip(group.samples, back.samples, strict=True):
        assert np.array_equal(a.ids, b.ids) and b.ids.dtype == np.int32
        assert np.array_equal(a.loss_mask, b.loss_mask)
        assert np.array_equal(a.logprobs, b.logprobs)
        assert b.views == a.views and b.views[1].region == Box(10, 20, 300, 400)
        assert b.valid_grounding_lenient == a.valid_grounding_lenient
        assert (b.answer_iou, b.right_image, b.answer_image, b.answer_box) == (
            a.answer_iou,
            a.right_image,
            a.answer_image,
            a.answer_box,
        )
        assert (b.reward, b.valid_grounding, b.turns, b.finish_reason, b.text) == (
            a.reward,
            a.valid_grounding,
            2,
            "stop",
            a.text,
        )


def test_trajectory_group_serialisation_is_compact():
    # 4 samples x ~300 tokens: ids 4 B + logprobs 4 B + mask 1 bit per token, plus small fields
    size = len(_group().to_bytes())
    assert size < 4 * 302 * 8.2 + 1400


def test_trajectory_group_refuses_other_schema_versions_and_garbage():
    wire = msgpack.unpackb(_group().to_bytes())
    wire["schema"] = 99
    with pytest.raises(RecordError, match="schema 99"):
        TrajectoryGroup.from_bytes(msgpack.packb(wire))
    with pytest.raises(RecordError):
        TrajectoryGroup.from_bytes(b"\xc1 not msgpack")
    del wire["samples"]
    wire["schema"] = 1
    with pytest.raises(RecordError, match="malformed"):
        TrajectoryGroup.from_bytes(msgpack.packb(wire))


def test_prompt_record_round_trips_through_json():
    record = PromptRecord(
        "q1", TaskKind.COUNTING, "How many?", ("h" * 64,), "3", points=((1.0, 2.0),), category="c"
    )
    assert PromptRecord.from_json(record.to_json()) == record
    mc = PromptRecord("q2", TaskKind.MULTIPLE_CHOICE, "Q?", ("h" * 64,), "B", ("x", "y"), Box(1, 2, 3, 4))
    assert PromptRecord.from_json(mc.to_json()) == mc


def test_prompt_record_from_bad_json_raises_record_error():
    with pytest.raises(RecordError):
        PromptRecord.from_json('{"id": "x"}')
    with pytest.raises(RecordError):
        PromptRecord.from_json('{"id": "x", "kind": "poetry", "question": "", "images": [], "answer": ""}')
