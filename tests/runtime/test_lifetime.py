"""A recipe's child ends with the recipe, even when the recipe is killed outright."""

import os
import signal
import subprocess
import sys
import time

import pytest

from runtime.lifetime import PARENT_ENV, child_env

# a parent that starts a child the way recipes.stages.run_mgpo does, prints the child's pid, and waits
PARENT = """
import subprocess, sys
from runtime.lifetime import child_env
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=child_env())
print(child.pid, flush=True)
child.wait()
"""
CHILD = """
import time
from runtime.lifetime import die_with_parent
die_with_parent()
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended: only its parent's wait is missing
        return stat.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("armed", [True, False])
def test_a_child_gets_sigterm_when_its_parent_is_killed(armed):
    child_code = CHILD if armed else CHILD.replace("die_with_parent()", "")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, child_code], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    time.sleep(1.0)  # the child has armed its signal
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert _alive(pid) is not armed  # armed: gone; not armed: it outlives its parent, as it used to
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_parent_pid_is_passed_and_not_inherited_further():
    assert child_env({"A": "1"}) == {"A": "1", PARENT_ENV: str(os.getpid())}
    code = "import os; from runtime.lifetime import die_with_parent; die_with_parent(); print(os.environ.get('MGPO_PARENT_PID'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "None"
