"""Logging, progress and structured output, for the library and the CLI.

Library code takes a logger with ``logger = get_logger(__name__)`` and reports through it;
it never prints. Besides the usual levels, a logger reports a metric, a progress step, a
section title and a rich table, so the same call reads well on a terminal and parses as
JSON. Everything goes to stderr; stdout stays clean for generated text and reports.

- ``LOG_LEVEL``: DEBUG, INFO (default), WARNING or ERROR; ``--verbose`` / ``--quiet``.
- ``LOG_FORMAT``: ``text`` (default: ``12:00:01 message``, colours on a terminal) or ``json``
  (one object per line: time, level, logger, message and the record's fields);
  ``--log-json``.
- ``NO_COLOR`` (any value) turns colours off; ``configure_logging(theme=...)`` picks a
  palette.
- In a distributed run (``RANK`` set by torchrun) only rank 0 logs below ERROR.

``progress(label, total)`` is a live rich bar on a terminal; elsewhere (a log file, JSON
logs) long work is reported by a line every ``every`` seconds instead of a bar.

Importing the library configures no logging. As loguru asks of libraries, nanogpt's records
are disabled until ``configure_logging`` (which the CLI calls) turns them on with a stderr
sink of its own; a program using the library calls it too, or routes the records to its
own sinks with ``loguru.logger.enable("nanogpt_cli")``. The program's sinks are never
removed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, Protocol

from loguru import logger as _loguru

from .errors import ConfigError

__all__ = [
    "LEVELS",
    "THEMES",
    "Logger",
    "Progress",
    "configure_logging",
    "get_logger",
    "progress",
]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
Format = Literal["text", "json"]

# Colour of each part of a text line, as loguru markup tags; "mono" has none.
THEMES: dict[str, dict[str, str]] = {
    "dark": {"time": "green", "debug": "blue", "warning": "yellow", "error": "red", "rule": "cyan"},
    "light": {
        "time": "blue",
        "debug": "magenta",
        "warning": "yellow",
        "error": "red",
        "rule": "blue",
    },
    "mono": {},
}


class _Settings:
    """What ``configure_logging`` chose; progress bars follow it too."""

    level = "INFO"
    format: Format = "text"
    theme = "dark"
    color = False
    handler: int | None = None  # the loguru sink configure_logging added; None: not yet


_settings = _Settings()
_LOGURU_DEFAULT = 0  # the id of the stderr sink loguru starts with
PACKAGE = __name__.partition(".")[0]  # every record of nanogpt's comes from this module
_loguru.disable(PACKAGE)  # until configure_logging: a library is silent unless asked


def configure_logging(
    level: str | None = None,
    theme: str | None = None,
    *,
    json_lines: bool | None = None,
    quiet: bool = False,
    verbose: bool = False,
) -> None:
    """Route log records to stderr.

    ``level`` wins over ``verbose`` (DEBUG) and ``quiet`` (WARNING), which win over
    ``$LOG_LEVEL``; ``json_lines`` wins over ``$LOG_FORMAT``. ``theme`` is ``dark`` (the
    default), ``light`` or ``mono``; colours are used only on a terminal and without
    ``$NO_COLOR``.
    """
    if quiet and verbose:
        raise ConfigError("give --quiet or --verbose, not both")
    chosen = level or ("DEBUG" if verbose else "WARNING" if quiet else None)
    name = (chosen or os.environ.get("LOG_LEVEL") or "INFO").upper()
    if name not in LEVELS:
        where = "level" if chosen else "LOG_LEVEL"
        raise ConfigError(f"{where} {name!r} is not a log level; use {', '.join(LEVELS)}")
    if json_lines is None:
        fmt = (os.environ.get("LOG_FORMAT") or "text").lower()
        if fmt not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT {fmt!r} is not a log format; use text or json")
    else:
        fmt = "json" if json_lines else "text"
    theme = theme or "dark"
    if theme not in THEMES:
        raise ConfigError(f"theme {theme!r} is not a theme; use {', '.join(THEMES)}")
    if _rank() > 0 and LEVELS.index(name) < LEVELS.index("ERROR"):
        name = "ERROR"  # the other ranks would repeat rank 0's lines
    _settings.level, _settings.format, _settings.theme = name, fmt, theme  # type: ignore[assignment]
    _settings.color = fmt == "text" and theme != "mono" and color_wanted()
    _loguru.enable(PACKAGE)
    # Replace loguru's own stderr sink and the one set here before; a program's own sinks
    # stay as they are.
    for handler in (_LOGURU_DEFAULT, _settings.handler):
        if handler is not None:
            with contextlib.suppress(ValueError):  # already removed
                _loguru.remove(handler)
    if fmt == "json":
        _settings.handler = _loguru.add(_json_sink, level=name, format="{message}", colorize=False)
    else:
        _settings.handler = _loguru.add(
            _Stderr(), level=name, format=_text_format, colorize=_settings.color
        )


def get_logger(name: str) -> Logger:
    """The logger of module ``name`` (``get_logger(__name__)``)."""
    return Logger(name)


class Logger:
    """Levels plus ``metric``, ``progress``, ``section`` and ``table``.

    Keyword fields given to any call travel with the record: JSON lines carry them, text
    lines show the message only.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._log = _loguru.bind(name=name)

    def debug(self, message: str, **fields: Any) -> None:
        self._emit("DEBUG", message, fields)

    def info(self, message: str, **fields: Any) -> None:
        self._emit("INFO", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._emit("WARNING", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._emit("ERROR", message, fields)

    def metric(self, name: str, value: float | int, unit: str = "", **fields: Any) -> None:
        """A measured value: ``loss: 1.2345``, ``throughput: 6,512 tokens/s``."""
        shown = f"{name}: {_number(value)}" + (f" {unit}" if unit else "")
        self._emit("INFO", shown, {"metric": name, "value": value, "unit": unit, **fields})

    def progress(
        self, label: str, current: float, total: float | None = None, unit: str = "", **fields: Any
    ) -> None:
        """One progress report as a line: ``prepare: 1,200/8,000 docs (15%)``."""
        count = f"{_number(current)}" + (f"/{_number(total)}" if total else "")
        shown = f"{label}: {count}" + (f" {unit}" if unit else "")
        if total:
            shown += f" ({current / total:.0%})"
        record = {"progress": label, "current": current, "total": total, "unit": unit}
        self._emit("INFO", shown, {**record, **fields})

    def section(self, title: str) -> None:
        """A heading between parts of the output."""
        self._emit("INFO", title, {"section": title}, raw=_rule(title))

    def table(self, table: Any, **fields: Any) -> None:
        """A ``rich.table.Table``: drawn on a terminal, rows and columns in JSON."""
        title = str(table.title or "")
        columns = [str(c.header) for c in table.columns]
        cells = [[str(x) for x in c.cells] for c in table.columns]
        rows = [list(r) for r in zip(*cells, strict=True)]
        record = {"table": title, "columns": columns, "rows": rows, **fields}
        self._emit("INFO", title or "table", record, raw=_render(table))

    def _emit(
        self, level: str, message: str, fields: Mapping[str, Any], raw: str | None = None
    ) -> None:
        # raw: the text form of a record drawn by rich (rules, tables), shown as it is.
        self._log.bind(fields=dict(fields), raw=raw).log(level, message)


# -- sinks -----------------------------------------------------------------------------------


class _Stderr:
    """Whatever ``sys.stderr`` is when a message is written (it may be replaced later, as
    test runners, notebooks and live progress bars do), not the stream it was when logging
    was set up."""

    def write(self, message: str) -> None:
        sys.stderr.write(message)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _text_format(record: Mapping[str, Any]) -> str:
    extra = record["extra"]
    if extra.get("raw") is not None:
        # Substituted, not parsed: rendered tables keep their braces, tags and backslashes.
        return "{extra[raw]}\n"
    colors = THEMES[_settings.theme]
    level = record["level"].name

    def tag(part: str, text: str) -> str:
        color = colors.get(part)
        return f"<{color}>{text}</{color}>" if color else text

    line = tag("time", "{time:HH:mm:ss}") + " "
    if level == "DEBUG":
        line += tag("debug", "{message}")
    elif level in ("WARNING", "ERROR", "CRITICAL"):
        part = "warning" if level == "WARNING" else "error"
        line += tag(part, f"{part}:") + " {message}"
    else:
        line += "{message}"
    return line + "\n{exception}"


def _json_sink(message: Any) -> None:
    record = message.record
    extra = record["extra"]
    obj: dict[str, Any] = {
        "time": record["time"].isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "logger": extra.get("name", record["name"]),
        "message": record["message"],
    }
    for key, value in (extra.get("fields") or {}).items():
        # A field never replaces the record's own keys: it is renamed instead.
        obj[f"{key}_" if key in _RESERVED else key] = _plain(value)
    if record["exception"] is not None:
        error = record["exception"]
        obj["exception"] = f"{error.type.__name__}: {error.value}"
    sys.stderr.write(json.dumps(obj, allow_nan=False) + "\n")


_RESERVED = ("time", "level", "logger", "message", "exception")


def _plain(value: Any) -> Any:
    """``value`` as strict JSON: non-finite floats become null, anything else not JSON
    becomes its text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def output_format() -> Format:
    """``text`` or ``json``: how records are written now."""
    return _settings.format


def current_level() -> str:
    """The level records are shown from now (``DEBUG`` ... ``ERROR``)."""
    return _settings.level


def color_wanted() -> bool:
    """Colours on stderr: only on a terminal, and not under ``$NO_COLOR``."""
    return "NO_COLOR" not in os.environ and sys.stderr.isatty()


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _number(value: float | int | None) -> str:
    if value is None or isinstance(value, bool):
        return "n/a" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"


def _console(width: int | None = None) -> Any:
    from rich.console import Console

    return Console(
        file=sys.stderr,
        force_terminal=_settings.color,
        no_color=not _settings.color,
        width=width,
        highlight=False,
    )


def _render(renderable: Any) -> str:
    console = _console()
    with console.capture() as capture:
        console.print(renderable)
    return capture.get().rstrip("\n")


def _rule(title: str) -> str:
    from rich.rule import Rule

    color = THEMES[_settings.theme].get("rule")
    return _render(Rule(title, style=color or "none", align="left"))


# -- progress --------------------------------------------------------------------------------


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
        and _settings.handler is not None  # the library alone draws nothing either
        and sys.stderr.isatty()
        and _settings.format == "text"
        and LEVELS.index(_settings.level) <= LEVELS.index("INFO")
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
    display = RichProgress(*columns, console=_console(), transient=True, refresh_per_second=4)
    with display:
        _live = display
        try:
            yield _Bar(display, display.add_task(label, total=total, status="", unit=unit))
        finally:
            _live = None
