"""Every ``--help`` screen, drawn without rich: ``nanogpt --help`` without importing the
commands, and each command's own.

The top-level help is the command a user runs most and must answer in a fraction of
``import torch`` (docs/benchmarks.md). Typer renders help through ``typer.rich_utils``,
whose imports alone (rich's console, markdown, syntax and traceback modules) take a good
part of that budget, and listing the commands through Typer would import every command
module. So the root help is drawn here, in the look of Typer's panels, from the root's own
options and the command table in ``app.py``.

The commands' help is drawn here too (``HelpCommand``, ``HelpGroup``: Typer's ``cls=``),
because Typer's rich tables cut long option names and lists of choices with "…" at 80
columns, and read help text as rich markup (``pip install 'nanogpt-cli[tensorboard]'`` lost
its ``[tensorboard]``). Here names are never cut (one too long for its column takes a line
of its own) and text is shown as written.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import typer
import typer.core

_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
_CYAN, _GREEN, _YELLOW = "\x1b[1;36m", "\x1b[1;32m", "\x1b[33m"


def _width() -> int:
    if columns := os.environ.get("COLUMNS", "").strip():
        try:
            return max(40, int(columns))
        except ValueError:
            pass
    if sys.stdout.isatty():
        return max(40, shutil.get_terminal_size().columns)
    return 80


def _color() -> bool:
    """Styles unless NO_COLOR or a dumb terminal; ``typer.echo`` drops them off a terminal."""
    return not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


class _Style:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if self.on and text else text


# A panel row: long names (``--bias / --no-bias``), short names, the value's type, the help
# text, and what follows it dimmed (``[default: 6]``).
Row = tuple[str, str, str, str, str]
_GAP = 2  # spaces between columns


def _columns(rows: Sequence[Row], inner: int, short: int) -> tuple[int, int]:
    """The widths of the names and type columns: as many rows as possible fit in them,
    leaving the help a useful width; a row that does not fit takes a line of its own."""
    help_min = min(inner, max(24, inner * 2 // 5))
    fixed = short + _GAP if short else 0
    best, best_key = (0, 0), None
    for names in sorted({len(r[0]) for r in rows}):
        for kind in sorted({len(r[2]) for r in rows}):
            left = names + _GAP + fixed + (kind + _GAP if kind else 0)
            if inner - left < help_min:
                continue
            fits = sum(len(r[0]) <= names and len(r[2]) <= kind for r in rows)
            if best_key is None or (fits, -left) > best_key:
                best, best_key = (names, kind), (fits, -left)
    return best


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of ``width``, words never hyphenated, nothing cut off."""
    return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False) or []


def _panel(title: str, rows: Sequence[Row], width: int) -> list[str]:
    """A rounded box titled ``title`` with rows of (names, short names, type, help,
    extras), the help wrapped in its column. Names are never cut: one too long for its
    column goes on a line of its own, the help below it."""
    style = _Style(_color())
    inner = width - 4  # "│ " and " │"
    short = max(len(r[1]) for r in rows)
    names, kind = _columns(rows, inner, short)
    left = names + _GAP + (short + _GAP if short else 0) + (kind + _GAP if kind else 0)
    wrap = max(10, inner - left)
    border = style("╭─ ", _DIM) + title + style(" " + "─" * (width - len(title) - 5) + "╮", _DIM)
    lines = [border]

    def line(parts: Sequence[tuple[str, str]]) -> str:
        used = sum(len(text) for text, _ in parts)
        body = "".join(style(text, code) for text, code in parts) + " " * max(0, inner - used)
        return style("│ ", _DIM) + body + style(" │", _DIM)

    for name, short_name, type_, text, extra in rows:
        cells = [(name, _CYAN), (short_name, _GREEN), (type_, _YELLOW)]
        head: list[tuple[str, str]] = []
        fitted = len(name) <= names and len(type_) <= kind
        if fitted:
            widths = (names, short, kind)
            for (cell, code), cell_width in zip(cells, widths, strict=True):
                if cell_width:
                    head += [(cell, code), (" " * (cell_width - len(cell) + _GAP), "")]
        else:  # names and type on a line of their own (two, or more, if that is too long)
            pending: list[tuple[str, str]] = []
            for cell, code in cells:
                for piece in _wrap(cell, inner) if cell else []:
                    used = sum(len(t) for t, _ in pending)
                    if pending and used + _GAP + len(piece) > inner:
                        lines.append(line(pending))
                        pending = []
                    pending += [("  ", "")] if pending else []
                    pending.append((piece, code))
            lines.append(line(pending))
            head = [(" " * left, "")]
        body = _wrap(text, wrap)
        extras = _wrap(extra, wrap)
        if extras and body and len(body[-1]) + 1 + len(extras[0]) <= wrap and len(extras) == 1:
            chunks = [[(b, "")] for b in body[:-1]] + [[(body[-1] + " ", ""), (extras[0], _DIM)]]
        else:
            chunks = [[(b, "")] for b in body] + [[(e, _DIM)] for e in extras]
        if not chunks and fitted:
            chunks = [[]]  # the row's names alone
        for i, chunk in enumerate(chunks):
            indent = head if i == 0 else [(" " * left, "")]
            lines.append(line([*indent, *chunk]))
    lines.append(style("╰" + "─" * (width - 2) + "╯", _DIM))
    return lines


def _paragraphs(text: str, width: int) -> list[list[str]]:
    """A docstring's paragraphs as lines of ``width``: prose is re-wrapped; a paragraph
    laid out by hand (indented lines, as examples are, or one starting with ``\\b``) keeps
    its lines, each wrapped under its own indentation."""
    out = []
    for paragraph in inspect.cleandoc(text).partition("\f")[0].split("\n\n"):
        lines = paragraph.strip("\n").splitlines()
        if not lines:
            continue
        if lines[0].startswith("\b") or any(ln[:1].isspace() for ln in lines[1:]):
            kept = []
            for ln in (ln.removeprefix("\b") for ln in lines):
                indent = " " * (len(ln) - len(ln.lstrip()) + 4)
                kept += textwrap.wrap(
                    ln.rstrip(), width, subsequent_indent=indent, break_on_hyphens=False
                ) or [""]
            out.append([k for k in kept if k] or [""])
        else:
            out.append(_wrap(paragraph, width))
    return out


def _head(usage: str, description: str, width: int) -> list[str]:
    """Usage and description: the first paragraph plain, the others dimmed."""
    style = _Style(_color())
    out = ["", " " + style("Usage:", _YELLOW) + " " + style(usage, _BOLD), ""]
    for i, paragraph in enumerate(_paragraphs(description, width - 2)):
        out += [" " + (style(ln, _DIM) if i else ln) for ln in paragraph]
        out.append("")
    return out


def render(
    usage: str,
    description: str,
    options: Sequence[tuple[str, str, str]],
    commands: Sequence[tuple[str, str]],
) -> str:
    """The whole help screen: usage, the description's paragraphs, an Options and a Commands
    panel. ``options`` are (long names, short names, help), ``commands`` (name, help)."""
    width = _width()
    out = _head(usage, description, width)
    out += _panel("Options", [(long, short, "", text, "") for long, short, text in options], width)
    out += _panel("Commands", [(name, "", "", text, "") for name, text in commands], width)
    return "\n".join(out) + "\n"


# -- the help of every other command -----------------------------------------------------------


def _default(param: Any, ctx: Any) -> str:
    """What ``[default: ...]`` shows for ``param``: its ``show_default`` text, else its
    default value (a switch's: the flag it stands for); nothing for an unset value."""
    shown = getattr(param, "show_default", None)
    if isinstance(shown, str):
        return shown
    if shown is False or (shown is None and not ctx.show_default):
        return ""
    resilient = ctx.resilient_parsing
    ctx.resilient_parsing = True  # the default as given, not converted (nor a failure)
    try:
        value = param.get_default(ctx, call=False)
    finally:
        ctx.resilient_parsing = resilient
    if getattr(param, "is_bool_flag", False):
        if param.secondary_opts:
            return param.opts[0] if value else param.secondary_opts[0]
        return "true" if value else ""
    if value is None or value == "" or value == ():
        return ""
    if callable(value):
        return "(dynamic)"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(getattr(v, "value", v)) for v in value)
    return str(getattr(value, "value", value))  # an Enum's value


def _range(kind: Any) -> str:
    """``x>=1``, ``0<=x<1``: the bounds of a number range type; nothing for other types."""
    low, high = getattr(kind, "min", None), getattr(kind, "max", None)
    if low is None and high is None:
        return ""
    lower = f"{low}{'<' if getattr(kind, 'min_open', False) else '<='}" if low is not None else ""
    upper = f"{'<' if getattr(kind, 'max_open', False) else '<='}{high}" if high is not None else ""
    if not lower:
        return f"x{upper}"
    if not upper:
        return f"x{'>' if lower.endswith('<') else '>='}{low}"
    return f"{lower}x{upper}"


def _param_row(param: Any, ctx: Any) -> Row:
    extras = [f"default: {d}"] if (d := _default(param, ctx)) else []
    if param.param_type_name == "argument":
        names, short = param.human_readable_name, ""
        kind = param.type.get_metavar(param=param, ctx=ctx) or f"<{param.type.name}>"
    else:
        long = [o for o in param.opts if o.startswith("--")]
        negative = [o for o in param.secondary_opts if o.startswith("--")]
        names = ", ".join(long) + (" / " + ", ".join(negative) if negative else "")
        short = " ".join(
            o for o in (*param.opts, *param.secondary_opts) if o not in long + negative
        )
        kind = "" if param.is_flag or param.count else param.make_metavar(ctx)
    if bounds := _range(param.type):
        extras.append(bounds)
    if param.required:
        extras.append("required")
    extra = f"[{'; '.join(extras)}]" if extras else ""
    return names, short, kind, getattr(param, "help", None) or "", extra


def render_command(command: Any, ctx: Any) -> str:
    """The help screen of a command or group: usage, description, its arguments and options
    in panels (``rich_help_panel`` names them, as in Typer), and a group's commands."""
    width = _width()
    usage = f"{ctx.command_path} {' '.join(command.collect_usage_pieces(ctx))}"
    out = _head(usage, command.help or "", width)
    panels: dict[tuple[int, str], list[Row]] = {(0, "Arguments"): [], (1, "Options"): []}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        order = 0 if param.param_type_name == "argument" else 1
        default = "Arguments" if order == 0 else "Options"
        title = getattr(param, "rich_help_panel", None) or default
        panels.setdefault((order, title), []).append(_param_row(param, ctx))
    for (_, title), rows in sorted(panels.items(), key=lambda item: item[0][0]):
        if rows:
            out += _panel(title, rows, width)
    if hasattr(command, "list_commands"):
        rows = []
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                first = inspect.cleandoc(sub.short_help or sub.help or "").split("\n\n")[0]
                rows.append((name, "", "", first, ""))
        if rows:
            out += _panel("Commands", rows, width)
    if command.epilog:
        out += ["", *(" " + ln for p in _paragraphs(command.epilog, width - 2) for ln in p)]
    return "\n".join(out) + "\n"


class HelpCommand(typer.core.TyperCommand):
    """A command whose ``--help`` is drawn by ``render_command``, and which reads nanoGPT's
    spellings of its options (``--compile=False``: see ``spellings``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from .spellings import parse_args_hook

        return super().parse_args(ctx, parse_args_hook(self, ctx, args))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # Printed, not returned, as Typer's rich help does (and the root's).
        typer.echo(render_command(self, ctx), nl=False)


class HelpGroup(typer.core.TyperGroup):
    """A group of commands whose ``--help`` is drawn by ``render_command``, and which reads
    nanoGPT's spellings of its own options (``nanogpt bench --compile=False``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        from .spellings import parse_args_hook

        return super().parse_args(ctx, parse_args_hook(self, ctx, args, group=True))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        typer.echo(render_command(self, ctx), nl=False)
