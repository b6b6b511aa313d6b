"""Progress of long work: a live rich bar on a terminal when logs are text at INFO or below;
elsewhere (a log file, JSON logs) a log line every ``every`` seconds instead of a bar. The
settings are the ones ``log.configure_logging`` made; before it, the library draws nothing."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from .log import LEVEL_NUMBERS, Logger, console, get_logger, settings

__all__ = ["Progress", "progress"]


class Progress(Protocol):
    """A long operation's progress; ``live`` says whether a bar is on screen."""

    live: bool

    def advance(self, amount: float = 1) -> None: ...

    def update(self, completed: float | None = None, total: float | None = None) -> None: ...

    def describe(self, text: str) -> None: ...

    def status(self, text: str) -> None: ...


class _Bar:
    """A task of the live rich display."""

    live = True

    def __init__(self, display: Any, task: Any) -> None:
        self._display, self._task = display, task

    def advance(self, amount: float = 1) -> None:
        self._display.advance(self._task, amount)

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        self._display.update(self._task, completed=completed, total=total)

    def describe(self, text: str) -> None:
        self._display.update(self._task, description=text)

    def status(self, text: str) -> None:
        self._display.update(self._task, status=text)


class _Lines:
    """Progress as a log line every ``every`` seconds (never, if None): a log file gets a
    few lines for long work and none for short work."""

    live = False

    def __init__(
        self, label: str, total: float | None, unit: str, every: float | None, log: Logger
    ) -> None:
        self.label, self.total, self.unit, self.every, self._log = label, total, unit, every, log
        self.completed = 0.0
        self._status = ""
        self._next = time.monotonic() + every if every is not None else math.inf

    def advance(self, amount: float = 1) -> None:
        self.completed += amount
        self._maybe_report()

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        self._maybe_report()

    def describe(self, text: str) -> None:
        self.label = text
        self._maybe_report()

    def status(self, text: str) -> None:
        self._status = text

    def _maybe_report(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        assert self.every is not None
        self._next = now + self.every
        fields = {"status": self._status} if self._status else {}
        self._log.progress(self.label, self.completed, self.total, self.unit, **fields)


_live: Any = None  # the rich Progress on screen, which nested operations add their tasks to
_progress_log = get_logger(__name__)


@contextmanager
def progress(
    label: str,
    total: float | None = None,
    unit: str = "",
    every: float | None = 30.0,
    show: bool = True,
) -> Iterator[Progress]:
    """A live progress bar on stderr, when it is a terminal and logs are text at INFO or
    below (and ``show``); otherwise a log line every ``every`` seconds (``None``: no lines).
    ``unit`` is ``bytes`` for transfers (sizes and rates), else a word shown after the count.

    An operation inside another (an evaluation inside training) adds its bar below the
    outer one.
    """
    global _live
    show = (
        show
        and settings().handler is not None  # the library alone draws nothing either
        and sys.stderr.isatty()
        and settings().format == "text"
        and LEVEL_NUMBERS[settings().level] <= LEVEL_NUMBERS["INFO"]
    )
    if not show:
        yield _Lines(label, total, unit, every, _progress_log)
        return
    if _live is not None:
        task = _live.add_task(label, total=total, status="", unit=unit)
        try:
            yield _Bar(_live, task)
        finally:
            _live.remove_task(task)
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress

    # Descriptions hold file names: shown as they are, never read as rich markup.
    columns: list[Any] = [TextColumn("{task.description}", markup=False), BarColumn(20)]
    if unit == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn()]
    else:
        columns += [MofNCompleteColumn(), TextColumn("{task.fields[unit]}", markup=False)]
    columns += [
        TextColumn("{task.fields[status]}", markup=False),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    # A few refreshes a second: each one is drawn while holding the GIL.
    display = RichProgress(*columns, console=console(), transient=True, refresh_per_second=4)
    with display:
        _live = display
        try:
            yield _Bar(display, display.add_task(label, total=total, status="", unit=unit))
        finally:
            _live = None
