"""Start a run's driver (`mgpo train`) as a detached process: it outlives a control-plane restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def launch_driver(
    config_path: Path, run_dir: Path, resume: bool, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m services.cli train --config CONFIG [--resume]`, logging to `<run_dir>/driver.log`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "services.cli", "train", "--config", str(config_path)]
    if resume:
        args.append("--resume")
    with open(run_dir / "driver.log", "ab") as log:
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
