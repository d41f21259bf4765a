"""A child process that ends with its parent. A recipe (`mgpo demo`, `mgpo reproduce`) runs each stage as an
`mgpo` child; killed outright (SIGKILL, an OOM kill), the recipe left its `mgpo train` child running, with its
Ray, Redis and actors. Linux's parent-death signal closes that gap: the child gets SIGTERM, which `mgpo
train` handles as Ctrl-C (a checkpoint, then everything shut down)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "MGPO_PARENT_PID"  # set by the parent: the pid whose death ends this process
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child that must end with this process."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """SIGTERM this process when the parent named in MGPO_PARENT_PID dies (Linux; elsewhere nothing)."""
    parent = os.environ.pop(PARENT_ENV, None)  # popped: this process's own children do not inherit it
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): the child outlives its parent, as before
    if os.getppid() != int(parent):  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
