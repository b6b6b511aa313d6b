"""The project's exceptions.

Library code raises these with a message that says what went wrong and what to do next.
Only the CLI turns them into a one-line error and an exit code.
"""

from __future__ import annotations


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for
    a one-line report of an error from a library we call."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class NanoGPTError(Exception):
    """Base class for every error the user can fix."""

    exit_code: int = 1


class ConfigError(NanoGPTError):
    """Options, presets or config files that do not make a valid configuration."""

    exit_code = 2


class DatasetError(NanoGPTError):
    """A dataset that is missing, unreadable or inconsistent."""


class CheckpointError(NanoGPTError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


class CheckpointMissing(CheckpointError):
    """No checkpoint where one was looked for: nothing there to lose."""


class CheckpointDamaged(CheckpointError):
    """A checkpoint is there but cannot be read (damaged, truncated, edited, of another
    kind): never to be taken for "no checkpoint", so nothing overwrites it silently."""


class DeviceError(NanoGPTError):
    """A device or dtype that this machine cannot provide."""


class TrainingError(NanoGPTError):
    """Training that cannot go on (e.g. the loss diverged)."""


class MetricsError(NanoGPTError):
    """A run directory without metrics, or a metrics.jsonl that cannot be read."""
