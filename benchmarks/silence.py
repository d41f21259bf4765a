"""How long a command leaves its terminal silent: runs it, timestamps every chunk of its output (progress bars
redraw with carriage returns, so chunks, not lines) on a pseudo-terminal, and reports the wall time and the longest silences with
the text printed just before each. Written for `make demo` (issue: nothing silent for more than 10 s).

    .venv/bin/python benchmarks/silence.py [--out benchmarks/results/demo_silence.json] -- make demo
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the child closed the terminal
        return b""


def watch(command: list[str], echo: bool = True) -> dict[str, object]:
    """Run `command`; the wall time, its exit code and its silences (gap, seconds from start, text before)."""
    started = last = time.perf_counter()
    gaps: list[tuple[float, float, str]] = []
    tail = ""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    # a pseudo-terminal, as a person has: progress bars (rich, tqdm) redraw only on a terminal
    master, slave = pty.openpty()
    # a terminal's size (40 x 120): at 0 x 0, tqdm draws its bars 0 columns wide, i.e. prints nothing
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with subprocess.Popen(command, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=env) as child:
        os.close(slave)
        while chunk := _read(master):
            now = time.perf_counter()
            gaps.append((now - last, last - started, tail))
            last = now
            text = chunk.decode(errors="replace")
            tail = (tail + text)[-160:]
            if echo:
                sys.stdout.write(text)
                sys.stdout.flush()
        code = child.wait()
    os.close(master)
    longest = sorted(gaps, reverse=True)[:8]
    return {
        "command": command,
        "returncode": code,
        "wall_s": round(time.perf_counter() - started, 1),
        "longest_silence_s": round(longest[0][0], 1) if longest else 0.0,
        "silences": [
            {
                "seconds": round(g, 1),
                "at_s": round(at, 1),
                "after": before.replace("\r", "\n").strip().splitlines()[-1:],
            }
            for g, at, before in longest
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="benchmarks/results/demo_silence.json")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command (default: make demo)")
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"] or ["make", "demo"]
    result = watch(command)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("returncode", "wall_s", "longest_silence_s")}))
    for silence in result["silences"]:  # type: ignore[union-attr]
        print(f"  {silence['seconds']:6.1f} s silent at {silence['at_s']:7.1f} s after {silence['after']}")
    return int(result["returncode"])  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
