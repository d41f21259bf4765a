"""What a stopped `mgpo data distill` already did, so the same command goes on from there.

Distillation asks every question 3 x n times before it writes anything (on a 7B over thousands of
questions, hours). `progress.jsonl` in the output folder gets one line per question and step as each
finishes: its direct and blind replies, then its one-crop pass rate, what a guess scores after the crop
(where asked) and its path (or none). Its first line is
the settings the answers depend on: a rerun with other settings is refused rather than mixing them. The
file is removed when the folder is written. A line cut short by the stop is asked again.
"""

from __future__ import annotations

import json
from pathlib import Path

from mgpo.data.distill import LookPath, path_from_json, path_json

PROGRESS_FILE = "progress.jsonl"


class Progress:
    """The steps done per question, read from `folder/progress.jsonl`; `add_replies` and `add_crop` append
    one as it finishes."""

    def __init__(self, folder: Path, settings: dict[str, object]) -> None:
        self.path = folder / PROGRESS_FILE
        self.replies: dict[str, dict[str, list[str]]] = {"direct": {}, "blind": {}}
        self.crops: dict[str, tuple[float, float | None, LookPath | None]] = {}
        settings = json.loads(json.dumps(settings))  # as it reads back: tuples become lists
        if self.path.exists():
            self._read(settings)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"settings": settings}) + "\n")

    def _read(self, settings: dict[str, object]) -> None:
        lines = self.path.read_text().splitlines()
        try:
            first = json.loads(lines[0]).get("settings")
        except (IndexError, ValueError, AttributeError):
            first = None  # not a settings line: refused below like other settings
        if first != settings:
            raise ValueError(
                f"{self.path}: a distillation with other settings stopped here ({first}); rerun it with "
                f"those, or remove the file to start again with these ({settings})"
            )
        for line in lines[1:]:
            try:
                item = json.loads(line)
                step, record_id = item["step"], str(item["id"])
                if step == "crop":
                    path = path_from_json({"id": record_id, **item["path"]})[1] if item["path"] else None
                    guess = None if item["guess"] is None else float(item["guess"])
                    self.crops[record_id] = (float(item["rate"]), guess, path)
                else:
                    self.replies[step][record_id] = [str(r) for r in item["replies"]]
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line cut short by the stop: that step is done again

    def add_replies(self, step: str, record_id: str, replies: list[str]) -> None:
        self.replies[step][record_id] = replies
        self._append({"step": step, "id": record_id, "replies": replies})

    def add_crop(self, record_id: str, rate: float, guess: float | None, path: LookPath | None) -> None:
        self.crops[record_id] = (rate, guess, path)
        line = path_json(record_id, path) if path is not None else None
        if line is not None:
            del line["id"]
        self._append({"step": "crop", "id": record_id, "rate": rate, "guess": guess, "path": line})

    def _append(self, item: dict[str, object]) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps(item) + "\n")  # one write per line, closed at once: a stop loses at most it

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
