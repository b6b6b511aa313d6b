"""What the CLI sets for its own process before a command runs a model: settings that
belong to the whole process, which the library never changes."""

from __future__ import annotations


def tune_process(device: str) -> None:
    """On a Linux CPU run, let malloc keep freed memory (``runtime.keep_freed_memory``;
    ``NANOGPT_KEEP_FREED_MEMORY=0`` leaves malloc alone)."""
    from ..runtime import keep_freed_memory, resolve_device

    if resolve_device(device).type == "cpu":
        keep_freed_memory()
