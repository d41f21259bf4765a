"""The chain-of-thought replies written from a grounding record, and the SFT folder's replies file."""

import pytest

from mgpo.boxes import Box
from mgpo.data.cot import pairs, position_words, rationale, read_replies, write_replies
from mgpo.records import PromptRecord, TaskKind
from mgpo.rewards import grounding_reward

TRUE_BOX = Box(0.5, 0.1, 0.7, 0.3)


def _record(answer="2", box=TRUE_BOX):
    question = "Which image has the tag printed with the character K, and where is that tag?"
    return PromptRecord(
        "r1", TaskKind.MULTI_IMAGE_GROUNDING, question, ("a" * 64, "b" * 64, "c" * 64), answer, target_box=box
    )


def test_position_words_name_the_box_centres_third():
    assert position_words(Box(0.0, 0.0, 0.2, 0.2)) == "top left"
    assert position_words(Box(0.4, 0.4, 0.6, 0.6)) == "centre"
    assert position_words(Box(0.8, 0.4, 0.9, 0.6)) == "middle right"
    assert position_words(Box(0.4, 0.8, 0.6, 0.9)) == "bottom centre"


def test_a_rationale_reasons_to_the_right_answer_in_the_papers_format():
    sizes = [(448, 448), (560, 420), (448, 448)]
    reply = rationale(_record(), sizes)
    assert reply.startswith("<think>I look for the tag printed with the character K in each of the 3 images.")
    assert "Images 1, 3 do not show it. The second image does" in reply and "top centre of image 2" in reply
    assert reply.endswith('<answer>{"image": 2, "bbox_2d": [280, 42, 392, 126]}</answer>')
    # the loop's own reward takes it as a perfect answer: well formed, right image, IoU 1
    graded = grounding_reward(reply, 2, Box(0.5, 0.1, 0.7, 0.3), sizes)
    assert graded.format == 1.0 and graded.iou == pytest.approx(1.0, abs=0.01)


def test_a_one_image_rationale_rules_nothing_out():
    record = PromptRecord(
        "r1", TaskKind.MULTI_IMAGE_GROUNDING, _record().question, ("a" * 64,), "1", target_box=TRUE_BOX
    )
    reply = rationale(record, [(448, 448)])
    assert reply == (
        "<think>I look for the tag printed with the character K in the image: it is small, in the top centre"
        ' of image 1.</think><answer>{"image": 1, "bbox_2d": [224, 45, 314, 134]}</answer>'
    )


def test_a_rationale_needs_a_grounding_record_with_its_box():
    with pytest.raises(ValueError, match="true box"):
        rationale(_record(box=None), [(448, 448)] * 3)
    with pytest.raises(ValueError, match="answer image 5 of 3"):
        rationale(_record(answer="5"), [(448, 448)] * 3)


def test_replies_round_trip_and_a_bad_line_names_itself(tmp_path):
    write_replies(tmp_path, {"r1": "x", "r2": "y"})
    assert read_replies(tmp_path) == {"r1": "x", "r2": "y"}
    assert [(r.id, reply) for r, reply in pairs(iter([_record()]), read_replies(tmp_path))] == [("r1", "x")]
    (tmp_path / "replies.jsonl").write_text('{"id": "r1", "reply": "x"}\n{"id": "r2"}\n')
    with pytest.raises(ValueError, match="replies.jsonl:2"):
        read_replies(tmp_path)
    with pytest.raises(FileNotFoundError, match="mgpo data cot"):
        read_replies(tmp_path / "nowhere")
