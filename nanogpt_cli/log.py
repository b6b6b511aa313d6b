"""Logging and progress for the library and the CLI.

Library code logs through ``logger`` and reports long work through ``progress``; it never
prints. Messages go to stderr, so stdout stays clean for generated text.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from loguru import logger

__all__ = ["Progress", "configure_logging", "logger", "progress"]

_FORMAT = "<green>{time:HH:mm:ss}</green> <level>{message}</level>"


def configure_logging(level: str | None = None) -> None:
    """Send log records at ``level`` (default ``$LOG_LEVEL`` or INFO) to stderr."""
    level = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    logger.remove()
    logger.add(_Stderr(), level=level, format=_FORMAT, colorize=None)


class _Stderr:
    """Whatever ``sys.stderr`` is when a message is written (it may be replaced later, as
    test runners and notebooks do), not the stream it was when logging was set up."""

    def write(self, message: str) -> None:
        sys.stderr.write(message)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


class Progress(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def update(self, completed: float | None = None, total: float | None = None) -> None: ...

    def describe(self, text: str) -> None: ...


class _RichProgress:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar, self._task = bar, task

    def advance(self, amount: float = 1) -> None:
        self._bar.advance(self._task, amount)

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        self._bar.update(self._task, completed=completed, total=total)

    def describe(self, text: str) -> None:
        self._bar.update(self._task, description=text)


class _Silent:
    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        pass

    def describe(self, text: str) -> None:
        pass


@contextmanager
def progress(label: str, total: float | None = None, unit: str = "") -> Iterator[Progress]:
    """A progress bar on stderr when it is a terminal; silent otherwise (logs stay clean)."""
    if not sys.stderr.isatty():
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns += [MofNCompleteColumn()]
    columns.append(TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield _RichProgress(bar, bar.add_task(label, total=total))
