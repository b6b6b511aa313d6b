"""What the CLI sets for its own process before a command runs a model: settings that
belong to the whole process, which the library never changes."""

from __future__ import annotations

import os


def tune_process(device: str) -> None:
    """On a Linux CPU run, let malloc keep freed memory (``runtime.keep_freed_memory``;
    ``NANOGPT_KEEP_FREED_MEMORY=0`` leaves malloc alone). A process started by a launcher
    (``--nproc-per-node``, torchrun) ends with it: ``lifeline.end_with_parent``."""
    from ..runtime import keep_freed_memory, resolve_device

    end_with_launcher()
    if resolve_device(device).type == "cpu":
        keep_freed_memory()


def end_with_launcher() -> None:
    """In a process that torch's elastic agent started (``nanogpt train --nproc-per-node``
    or torchrun), stop when the launcher dies, however it dies: a SIGTERM first (the run
    saves its last step and stops, as when the launcher stops it), SIGKILL 30 s later."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    from ..lifeline import LAUNCHER_PID_ENV, end_with_parent

    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    end_with_parent(int(launcher) if launcher.isdigit() else None)
