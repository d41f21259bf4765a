"""Per-step metrics to `<run_dir>/metrics.jsonl` (one JSON object per line, appended, survives resume) and
TensorBoard event files in `<run_dir>/tensorboard/` (tensorboardX: no TensorFlow, no tensorboard server)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class MetricsLog:
    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        from tensorboardX import SummaryWriter

        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", buffering=1)
        self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(self, step: int, kind: str, values: dict[str, float]) -> None:
        """One record of `kind` ("step", "sync", "run") at learner step `step`."""
        self._file.write(json.dumps({"kind": kind, "step": step, "time": time.time(), **values}) + "\n")
        for name, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._tb.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        self._tb.close()
        self._file.close()


def read_metrics(run_dir: str | os.PathLike[str], kind: str | None = None) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if kind is None or r["kind"] == kind]
