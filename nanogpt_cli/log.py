"""Logging, progress and structured output, for the library and the CLI.

Library code takes a logger with ``logger = get_logger(__name__)`` and reports through it;
it never prints. Besides the usual levels, a logger reports a metric, a progress step, a
section title and a rich table, so the same call reads well on a terminal and parses as
JSON. Everything goes to stderr; stdout stays clean for generated text and reports.

- ``LOG_LEVEL``: DEBUG, INFO (default), WARNING or ERROR, or any name or number loguru or
  Python's ``logging`` knows (``warn``, ``trace``, ``critical``, ``10``), in any case; an
  unknown value is reported once and INFO used. ``--verbose`` / ``--quiet``.
- ``LOG_FORMAT``: ``text`` (default: ``12:00:01 message``, colours on a terminal) or ``json``
  (one object per line: time, level, logger, message and the record's fields);
  ``--log-json``.
- ``NO_COLOR`` (any value) turns colours off; ``configure_logging(theme=...)`` picks a
  palette.
- In a distributed run (``RANK`` set by torchrun) only rank 0 logs below ERROR.

Progress bars (``progress(label, total)``) follow these settings: see ``nanogpt_cli.progress``.

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
from collections.abc import Mapping
from typing import Any, Literal

from loguru import logger as _loguru

from .errors import ConfigError

__all__ = [
    "LEVELS",
    "LEVEL_NUMBERS",
    "THEMES",
    "Logger",
    "configure_logging",
    "get_logger",
    "level_name",
]

# Loguru's levels, lowest first, with their numbers (Python's logging numbers them alike).
LEVEL_NUMBERS = {
    "TRACE": 5,
    "DEBUG": 10,
    "INFO": 20,
    "SUCCESS": 25,
    "WARNING": 30,
    "ERROR": 40,
    "CRITICAL": 50,
}
LEVELS = tuple(LEVEL_NUMBERS)
# Other names of them: Python logging's, and NOTSET (0: everything).
LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "NOTSET": "TRACE"}
DEFAULT_LEVEL = "INFO"
_LEVEL_CHOICES = "TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR, CRITICAL or a number up to 50"
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


def settings() -> _Settings:
    """The settings ``configure_logging`` made (level, format, theme, colour, its sink)."""
    return _settings


_warned_levels: set[str] = set()  # unknown LOG_LEVEL values already reported
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
    ``$LOG_LEVEL``; ``json_lines`` wins over ``$LOG_FORMAT``. A level is any name or number
    of ``level_name``; an unknown ``level`` is an error, an unknown ``$LOG_LEVEL`` a warning
    (and INFO). ``theme`` is ``dark`` (the default), ``light`` or ``mono``; colours are used
    only on a terminal and without ``$NO_COLOR``.
    """
    if quiet and verbose:
        raise ConfigError("give --quiet or --verbose, not both")
    chosen = level or ("DEBUG" if verbose else "WARNING" if quiet else None)
    unknown = None  # a $LOG_LEVEL that is no level: reported once logging is set up
    if chosen:
        name = level_name(chosen)
        if name is None:
            raise ConfigError(f"level {chosen!r} is not a log level; use {_LEVEL_CHOICES}")
    else:
        raw = os.environ.get("LOG_LEVEL", "").strip()
        name = level_name(raw) if raw else DEFAULT_LEVEL
        if name is None:
            unknown, name = raw, DEFAULT_LEVEL
    if json_lines is None:
        fmt = (os.environ.get("LOG_FORMAT") or "text").lower()
        if fmt not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT {fmt!r} is not a log format; use text or json")
    else:
        fmt = "json" if json_lines else "text"
    theme = theme or "dark"
    if theme not in THEMES:
        raise ConfigError(f"theme {theme!r} is not a theme; use {', '.join(THEMES)}")
    if _rank() > 0 and LEVEL_NUMBERS[name] < LEVEL_NUMBERS["ERROR"]:
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
    if unknown is not None and unknown not in _warned_levels:
        _warned_levels.add(unknown)  # once per process, however often this is called
        get_logger(__name__).warning(
            f"LOG_LEVEL={unknown!r} is not a log level; using {DEFAULT_LEVEL} "
            f"(use {_LEVEL_CHOICES})"
        )


def level_name(value: str | int) -> str | None:
    """The loguru level that ``value`` names, or None: a name of loguru's or Python
    logging's in any case (``warn``, ``Fatal``), or a number from 0 to 50 (``10``, ``30``;
    one between levels counts as the next level up). ``LEVELS`` holds the names returned."""
    text = str(value).strip().upper()
    if text.isdigit():
        number = int(text)
        return next((name for name, at in LEVEL_NUMBERS.items() if number <= at), None)
    text = LEVEL_ALIASES.get(text, text)
    return text if text in LEVEL_NUMBERS else None


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
    if level in ("TRACE", "DEBUG"):
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
    """The level records are shown from now (one of ``LEVELS``: ``TRACE`` ... ``CRITICAL``)."""
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


def console(width: int | None = None) -> Any:
    """A rich console on stderr, coloured as the logging settings say."""
    from rich.console import Console

    return Console(
        file=sys.stderr,
        force_terminal=_settings.color,
        no_color=not _settings.color,
        width=width,
        highlight=False,
    )


def _render(renderable: Any) -> str:
    out = console()
    with out.capture() as capture:
        out.print(renderable)
    return capture.get().rstrip("\n")


def _rule(title: str) -> str:
    from rich.rule import Rule

    color = THEMES[_settings.theme].get("rule")
    return _render(Rule(title, style=color or "none", align="left"))
