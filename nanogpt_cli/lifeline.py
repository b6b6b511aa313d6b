"""Worker processes that end with the process that started them, however it ends.

A launcher killed with SIGKILL (by hand, by the out-of-memory killer) runs no clean-up, so
its workers would train on, re-parented to PID 1, with nobody watching. ``end_with_parent``
asks the kernel to signal the worker when its parent dies (``PR_SET_PDEATHSIG`` on Linux)
and starts a watchdog thread that notices the same elsewhere; a worker that has not ended
``grace_s`` seconds after its parent is killed outright.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5  # how often the watchdog looks at the parent
GRACE_S = 30.0  # as torch's elastic agent waits between its SIGTERM and its SIGKILL
# Set by ``nanogpt train --nproc-per-node`` for its processes: the launcher's PID.
LAUNCHER_PID_ENV = "NANOGPT_LAUNCHER_PID"


def end_with_parent(
    parent: int | None = None, signum: int = signal.SIGTERM, grace_s: float = GRACE_S
) -> None:
    """Signal this process with ``signum`` as soon as ``parent`` (by default the present
    parent) is gone, and kill it ``grace_s`` seconds later if it is still running; at once
    if the parent is gone already. A SIGTERM lets a training worker save and stop as it
    does when the launcher stops it."""
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        _set_parent_death_signal(signum)
    if not parent_alive(parent):  # it died before the line above: no one will signal us
        _send(signum)
    watchdog = threading.Thread(
        target=_watch, args=(parent, signum, grace_s), name="nanogpt-lifeline", daemon=True
    )
    watchdog.start()


def _set_parent_death_signal(signum: int) -> None:
    """The kernel sends ``signum`` when the thread that started this process ends (the
    launcher starts its workers from its main thread, so: when the launcher ends)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def parent_alive(parent: int) -> bool:
    """Whether ``parent`` still is this process's parent (and alive)."""
    if sys.platform == "win32":
        return _windows_alive(parent)
    return os.getppid() == parent  # an orphan is re-parented to init or a subreaper


def _windows_alive(pid: int) -> bool:
    synchronize, wait_timeout = 0x00100000, 0x102
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(synchronize, False, pid)
    if not handle:
        return False
    try:
        return bool(kernel32.WaitForSingleObject(handle, 0) == wait_timeout)
    finally:
        kernel32.CloseHandle(handle)


def _watch(parent: int, signum: int, grace_s: float) -> None:
    was_alive = parent_alive(parent)
    while parent_alive(parent):
        time.sleep(POLL_S)
    if was_alive and not sys.platform.startswith("linux"):  # Linux's kernel has sent it
        _send(signum)
    time.sleep(grace_s)
    _send(getattr(signal, "SIGKILL", signal.SIGTERM))


def _send(signum: int) -> None:
    if sys.platform == "win32":  # no signals to deliver to oneself: end now
        os._exit(128 + signum)
    os.kill(os.getpid(), signum)
