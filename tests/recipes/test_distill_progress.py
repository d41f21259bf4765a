"""What a stopped distillation leaves for the same command to go on from."""

import json

import pytest

from mgpo.boxes import Box
from mgpo.data.distill import LookPath, answer_turn, crop_request
from recipes.distill_progress import PROGRESS_FILE, Progress

SETTINGS = {"model": "m", "data": "d", "n": 2, "pixels": (50176, 50176), "shuffle": False}
PATH = LookPath((crop_request(Box(0, 0, 56, 56), 1), answer_turn("B")), (Box(0, 0, 512, 512),))


def test_steps_done_read_back_as_they_were_added(tmp_path):
    first = Progress(tmp_path / "out", SETTINGS)
    first.add_replies("direct", "q1", ["\\boxed{A}", "\\boxed{B}"])
    first.add_replies("blind", "q1", ["\\boxed{A}", "\\boxed{A}"])
    first.add_crop("q1", 0.5, 0.25, PATH)
    first.add_crop("q2", 0.0, None, None)
    again = Progress(tmp_path / "out", SETTINGS)  # the tuple reads back as a list and still matches
    assert again.replies == {
        "direct": {"q1": ["\\boxed{A}", "\\boxed{B}"]},
        "blind": {"q1": ["\\boxed{A}"] * 2},
    }
    assert again.crops == {"q1": (0.5, 0.25, PATH), "q2": (0.0, None, None)}
    again.remove()
    assert not (tmp_path / "out" / PROGRESS_FILE).exists()


def test_a_line_cut_short_by_the_stop_is_done_again(tmp_path):
    progress = Progress(tmp_path, SETTINGS)
    progress.add_crop("q1", 1.0, None, PATH)
    with open(tmp_path / PROGRESS_FILE, "a") as out:
        out.write('{"step": "crop", "id": "q2", "rate": 0.5, "pa')  # the stop came mid-line
    assert set(Progress(tmp_path, SETTINGS).crops) == {"q1"}


def test_other_settings_are_refused_not_mixed(tmp_path):
    Progress(tmp_path, SETTINGS).add_crop("q1", 1.0, None, None)
    with pytest.raises(ValueError, match="other settings stopped here"):
        Progress(tmp_path, {**SETTINGS, "n": 16})
    assert json.loads((tmp_path / PROGRESS_FILE).read_text().splitlines()[0])["settings"]["n"] == 2
    (tmp_path / PROGRESS_FILE).write_text('{"step": "crop", "id": "q1"')  # no settings line at all
    with pytest.raises(ValueError, match="other settings stopped here"):
        Progress(tmp_path, SETTINGS)
