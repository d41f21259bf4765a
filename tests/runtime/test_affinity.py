import os
import subprocess
import sys

import pytest

from runtime.affinity import pin

CODE = """
import os, threading, time, torch
started = threading.Event()
threading.Thread(target=lambda: (started.set(), time.sleep(5)), daemon=True).start()
started.wait()
from runtime.affinity import pin
pin([0], "learner.cpu_affinity")
tids = os.listdir("/proc/self/task")
print(len(tids), all(os.sched_getaffinity(int(t)) == {0} for t in tids), torch.get_num_threads())
"""


def test_a_pinned_process_moves_every_thread_it_has_and_sizes_torch_to_the_cores():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    threads, all_pinned, torch_threads = done.stdout.split()
    assert int(threads) >= 2 and all_pinned == "True" and torch_threads == "1"


def test_cores_the_machine_lacks_are_named():
    with pytest.raises(ValueError, match=r"rollout.cpu_affinity: cores \[4096\] are not among"):
        pin([4096], "rollout.cpu_affinity")
    assert os.sched_getaffinity(0)  # untouched
