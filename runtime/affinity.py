"""Pin a process to CPU cores: every thread it has now and every thread it starts later, and torch's
intra-op pool sized to them. On a shared machine (a workstation, the 2-core CI box) the learner and the
rollout actors otherwise time-share every core and their thread pools fight; on Kubernetes each role has its
own pod and this stays off."""

from __future__ import annotations

import os
from collections.abc import Sequence


def pin(cores: Sequence[int], what: str) -> None:
    """Move this process's threads onto `cores` (`what` names the config key in errors)."""
    available = os.sched_getaffinity(0)
    missing = sorted(set(cores) - available)
    if missing:
        raise ValueError(f"{what}: cores {missing} are not among this machine's {sorted(available)}")
    for tid in os.listdir(
        "/proc/self/task"
    ):  # threads started before (OpenMP's, Ray's) keep theirs otherwise
        try:
            os.sched_setaffinity(int(tid), cores)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    import torch

    torch.set_num_threads(len(cores))
