"""The looks read probe (benchmarks/looks_read_probe.py) on the tiny model: every look gets its rows in both
prompt forms, the direct asking is the whole view answered by the question's own letter, and the table the
script writes has a row per (look, form)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_the_probe_writes_a_row_per_look_and_form(tiny_small, tmp_path):
    out = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/looks_read_probe.py", str(tiny_small), "--n", "6", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    for look in ("look0", "look1", "look2"):
        assert rows[f"{look}, distill's direct asking (whole view)"]["n"] >= 1
        assert any(r.startswith(f"{look}, cold-start form") for r in rows)
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n"] >= 1 for r in rows.values())
    assert sum(r["n"] for k, r in rows.items() if "direct asking" in k) == 6
