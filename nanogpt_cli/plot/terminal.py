"""Loss curves drawn in the terminal with rich: one colour per run, a marker per
evaluation."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..errors import MetricsError
from .runs import TERMINAL_COLORS, Run

if TYPE_CHECKING:
    from rich.text import Text

# Terminal chart: the width follows the terminal between these bounds (72 when piped).
DEFAULT_WIDTH = 72
MIN_WIDTH = 40
MAX_WIDTH = 100
DEFAULT_HEIGHT = 16
MIN_HEIGHT = 5
# What --width and --height accept: the chart is a grid of cells held in memory.
MAX_CHART_WIDTH = 1000
MAX_CHART_HEIGHT = 500
# Val loss markers: ASCII, so they stay one column wide in every terminal and font, and
# tell runs apart when piped output has no colours.
MARKERS = ("o", "x", "+", "*", "#", "@", "%", "&")
TRAIN_GLYPH = "⠒⠒"  # how a training-loss line looks in the legend


def chart_width() -> int:
    """The terminal's width, between MIN_WIDTH and MAX_WIDTH (DEFAULT_WIDTH when piped)."""
    columns = shutil.get_terminal_size((DEFAULT_WIDTH, DEFAULT_HEIGHT)).columns
    return max(MIN_WIDTH, min(MAX_WIDTH, columns))


def render_chart(
    runs: Sequence[Run], width: int | None = None, height: int = DEFAULT_HEIGHT
) -> Text:
    """Loss vs iteration of every run, as rich text ``width`` columns wide at most.

    Training loss is a line of braille dots (2x4 dots a character), val loss a marker per
    evaluation. Below the plot: the iteration axis and a legend line per series. The text
    carries a colour per run; printed through ``rich.console.Console`` the colours are
    dropped where stdout is not a terminal. ``text.plain`` is the chart without them.
    """
    from rich.text import Text

    width = chart_width() if width is None else width
    if not MIN_WIDTH <= width <= MAX_CHART_WIDTH:
        raise MetricsError(
            f"--width must be between {MIN_WIDTH} and {MAX_CHART_WIDTH} columns (got {width})"
        )
    if not MIN_HEIGHT <= height <= MAX_CHART_HEIGHT:
        raise MetricsError(
            f"--height must be between {MIN_HEIGHT} and {MAX_CHART_HEIGHT} rows (got {height})"
        )
    values = [p.loss for r in runs for p in r.train if p.loss is not None]
    values += [p.val_loss for r in runs for p in r.evals if p.val_loss is not None]
    if not values:
        names = ", ".join(r.name for r in runs)
        raise MetricsError(
            f"nothing to plot: {names} logged no finite loss (did training diverge?)"
        )
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:  # a flat line still needs a scale; centre it
        pad = max(abs(hi) * 0.05, 0.05)
        lo, hi = lo - pad, hi + pad
    xmax = max(max(r.last_iter for r in runs), 1)

    labels = _y_labels(lo, hi, height)
    label_width = max(len(s) for s in labels.values())
    cols = width - label_width - 2  # "4.20 ┤" : the labels, a space and the axis
    canvas = _Canvas(cols, height)

    def x_dot(it: int) -> int:
        return round(it / xmax * (canvas.dot_cols - 1))

    def y_dot(v: float) -> int:
        # hi and lo land at the centre of the top and bottom rows, where their labels are.
        return round(1.5 + (hi - v) / (hi - lo) * (canvas.dot_rows - 4))

    for index, run in enumerate(runs):
        style = TERMINAL_COLORS[index % len(TERMINAL_COLORS)]
        previous: tuple[int, int] | None = None
        for p in run.train:
            if p.loss is None:  # a non-finite loss breaks the line
                previous = None
                continue
            point = (x_dot(p.iter), y_dot(p.loss))
            canvas.line(previous or point, point, style)
            previous = point
    # Markers after every line, so no run's training line hides another run's evaluations.
    for index, run in enumerate(runs):
        style = "bold " + TERMINAL_COLORS[index % len(TERMINAL_COLORS)]
        for e in run.evals:
            if e.val_loss is not None:
                canvas.mark(x_dot(e.iter) // 2, y_dot(e.val_loss) // 4, _marker(index), style)

    text = Text(no_wrap=True, overflow="crop")
    for row in range(height):
        label = labels.get(row)
        text.append(f"{label or '':>{label_width}} {'┤' if label else '│'}", style="dim")
        cells = list(canvas.row(row))
        while cells and cells[-1][0] == " ":  # no trailing blanks in a pipe or a file
            cells.pop()
        for char, cell_style in cells:
            text.append(char, style=cell_style)
        text.append("\n")
    text.append(" " * label_width + " └" + "─" * cols + "\n", style="dim")
    text.append(_x_labels(xmax, label_width + 2, cols) + "\n", style="dim")
    text.append_text(_legend(runs, width))
    text.rstrip()
    return text


def _marker(index: int) -> str:
    return MARKERS[index % len(MARKERS)]


def _y_labels(lo: float, hi: float, height: int) -> dict[int, str]:
    """Tick labels by row, the top and bottom rows at the extremes of the data.

    3 to 5 labels, as many as split the rows into equal gaps (else 5, or 3 on a short
    chart), so the ticks are evenly spaced on the screen as well as in value.
    """
    count = next((n for n in (5, 4, 3) if (height - 1) % (n - 1) == 0), 5 if height >= 13 else 3)
    step = (hi - lo) / (count - 1)
    # Two decimals, as losses are usually compared; more where neighbouring ticks are
    # closer than that tells apart, never more than 4.
    decimals = max(2, min(4, math.ceil(-math.log10(step)) + 1))
    labels = {}
    for k in range(count):
        row = round(k * (height - 1) / (count - 1))
        labels[row] = f"{hi - row * (hi - lo) / (height - 1):.{decimals}f}"
    return labels


def _x_labels(xmax: int, indent: int, cols: int) -> str:
    """``0``, ``iteration`` and the last iteration, under the first, middle and last column."""
    line = [" "] * (indent + cols)
    right = str(xmax)
    line[indent] = "0"
    line[indent + cols - len(right) : indent + cols] = right
    title = "iteration"
    start = indent + (cols - len(title)) // 2
    if start > indent + 2 and start + len(title) < indent + cols - len(right) - 1:
        line[start : start + len(title)] = title
    return "".join(line).rstrip()


def _legend(runs: Sequence[Run], width: int) -> Text:
    from rich.text import Text

    name_width = min(max(len(r.name) for r in runs), 24)
    text = Text()
    for index, run in enumerate(runs):
        color = TERMINAL_COLORS[index % len(TERMINAL_COLORS)]
        name = _fit(run.name, name_width)
        last_train = next((p.loss for p in reversed(run.train) if p.loss is not None), None)
        last_val = next((e.val_loss for e in reversed(run.evals) if e.val_loss is not None), None)
        best = run.best_val
        # Each series' details from the fullest to the shortest: the first that fits.
        rows: list[tuple[str, str, list[str]]] = []
        if run.train:
            rows.append((TRAIN_GLYPH, "train loss", [f"last {_num(last_train)}"]))
        if run.evals:
            last = f"last {_num(last_val)}"
            details = [last]
            if best is not None:
                details = [
                    f"{last}  best {best[1]:.4f} at iter {best[0]}",
                    f"{last}  best {best[1]:.4f}",
                    last,
                ]
            rows.append((_marker(index) + " ", "val loss", details))
        for glyph, series, details in rows:
            head = f" {name:<{name_width}}  {series:<10}  "
            room = width - len(glyph) - len(head)
            info = next((d for d in details if len(d) <= room), details[-1])
            line = Text()
            line.append(glyph, style="bold " + color)
            line.append(head + info)
            line.truncate(width, overflow="ellipsis")
            text.append_text(line)
            text.append("\n")
    return text


def _fit(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


class _Canvas:
    """A grid of braille characters (2x4 dots each) with a colour per cell and markers."""

    # Bit of each dot in a braille character (U+2800 + bits), by (column, row) in the cell.
    BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))

    def __init__(self, cols: int, rows: int) -> None:
        self.cols, self.rows = cols, rows
        self.dot_cols, self.dot_rows = 2 * cols, 4 * rows
        self._bits = [[0] * cols for _ in range(rows)]
        self._styles: list[list[str | None]] = [[None] * cols for _ in range(rows)]
        self._marks: dict[tuple[int, int], tuple[str, str]] = {}

    def dot(self, x: int, y: int, style: str) -> None:
        x = min(max(x, 0), self.dot_cols - 1)
        y = min(max(y, 0), self.dot_rows - 1)
        self._bits[y // 4][x // 2] |= self.BITS[x % 2][y % 4]
        # Where runs cross, the cell takes the later run's colour; the dots merge.
        self._styles[y // 4][x // 2] = style

    def line(self, a: tuple[int, int], b: tuple[int, int], style: str) -> None:
        """Every dot between a and b (Bresenham), so steep drops stay connected."""
        (x0, y0), (x1, y1) = a, b
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x1 > x0 else -1), (1 if y1 > y0 else -1)
        err = dx + dy
        while True:
            self.dot(x0, y0, style)
            if (x0, y0) == (x1, y1):
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def mark(self, col: int, row: int, char: str, style: str) -> None:
        col = min(max(col, 0), self.cols - 1)
        row = min(max(row, 0), self.rows - 1)
        self._marks[row, col] = (char, style)

    def row(self, row: int) -> Iterable[tuple[str, str | None]]:
        for col in range(self.cols):
            if (row, col) in self._marks:
                yield self._marks[row, col]
            else:
                bits = self._bits[row][col]
                # An empty cell is a space, not U+2800: blank braille can show as a box.
                yield (chr(0x2800 + bits) if bits else " "), self._styles[row][col]
