"""``nanogpt --help`` without importing the commands or rich.

The top-level help is the command a user runs most and must answer in a fraction of
``import torch`` (docs/benchmarks.md). Typer renders help through ``typer.rich_utils``,
whose imports alone (rich's console, markdown, syntax and traceback modules) take a good
part of that budget, and listing the commands through Typer would import every command
module. So the root help is drawn here, in the look of Typer's panels, from the root's own
options and the command table in ``app.py``; every other ``--help`` is Typer's.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Sequence

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


def _panel(
    title: str, rows: Sequence[tuple[str, str, str]], styles: tuple[str, str], width: int
) -> list[str]:
    """A rounded box titled ``title`` with rows of (name, short name, help), the help wrapped."""
    style = _Style(_color())
    inner = width - 4  # "│ " and " │"
    first = max(len(r[0]) for r in rows)
    second = max(len(r[1]) for r in rows)
    left = first + 2 + (second + 2 if second else 0)
    wrap = max(10, inner - left)
    border = style("╭─ ", _DIM) + title + style(" " + "─" * (width - len(title) - 5) + "╮", _DIM)
    lines = [border]
    for name, short, text in rows:
        chunks = textwrap.wrap(text, wrap, break_on_hyphens=False) or [""]
        for i, chunk in enumerate(chunks):
            if i == 0:
                head = style(name, styles[0]) + " " * (first - len(name) + 2)
                if second:
                    head += style(short, styles[1]) + " " * (second - len(short) + 2)
            else:
                head = " " * left
            body = head + chunk + " " * (wrap - len(chunk))
            lines.append(style("│ ", _DIM) + body + style(" │", _DIM))
    lines.append(style("╰" + "─" * (width - 2) + "╯", _DIM))
    return lines


def render(
    usage: str,
    description: str,
    options: Sequence[tuple[str, str, str]],
    commands: Sequence[tuple[str, str]],
) -> str:
    """The whole help screen: usage, the description's paragraphs, an Options and a Commands
    panel. ``options`` are (long names, short names, help), ``commands`` (name, help)."""
    width = _width()
    style = _Style(_color())
    out = ["", " " + style("Usage:", _YELLOW) + " " + style(usage, _BOLD), ""]
    for paragraph in description.split("\n\n"):
        out += [
            " " + line
            for line in textwrap.wrap(
                " ".join(paragraph.split()), width - 2, break_on_hyphens=False
            )
        ]
        out.append("")
    out += _panel("Options", options, (_CYAN, _GREEN), width)
    out += _panel("Commands", [(name, "", text) for name, text in commands], (_CYAN, ""), width)
    return "\n".join(out) + "\n"
