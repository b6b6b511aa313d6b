"""Loss curves of training runs: a PNG with matplotlib, or a chart drawn in the terminal.

A run is a directory with the ``metrics.jsonl`` that ``nanogpt train`` writes (see
docs/training.md). This module reads it, draws it and raises :class:`MetricsError`; it
never prints. It imports neither torch (``nanogpt plot`` starts in a fraction of a second)
nor matplotlib until a PNG is asked for (matplotlib is the optional ``plot`` extra).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MetricsError
from .train.metrics import METRICS_FILE, read_records

if TYPE_CHECKING:
    from rich.text import Text

__all__ = [
    "METRICS_FILE",
    "EvalPoint",
    "Run",
    "TrainPoint",
    "load_run",
    "load_runs",
    "render_chart",
    "write_png",
]

MATPLOTLIB_HINT = (
    "nanogpt plot -o needs matplotlib: pip install 'nanogpt-cli[plot]' "
    "(or run without -o for a terminal chart)"
)

# Terminal chart: the width follows the terminal between these bounds (72 when piped).
DEFAULT_WIDTH = 72
MIN_WIDTH = 40
MAX_WIDTH = 100
DEFAULT_HEIGHT = 16
MIN_HEIGHT = 5
# One colour per run, in the terminal (rich names) and in the PNG (matplotlib's cycle).
TERMINAL_COLORS = ("cyan", "magenta", "yellow", "green", "blue", "red")
# Val loss markers: ASCII, so they stay one column wide in every terminal and font, and
# tell runs apart when piped output has no colours.
MARKERS = ("o", "x", "+", "*", "#", "@", "%", "&")
TRAIN_GLYPH = "⠒⠒"  # how a training-loss line looks in the legend


@dataclass(frozen=True)
class TrainPoint:
    """A ``train`` record: the mean training loss over the last log interval."""

    iter: int
    tokens: int | None
    loss: float | None
    lr: float | None


@dataclass(frozen=True)
class EvalPoint:
    """An ``eval`` record: losses estimated on both splits."""

    iter: int
    tokens: int | None
    train_loss: float | None
    val_loss: float | None
    lr: float | None


@dataclass
class Run:
    """The metrics of one run directory, in iteration order."""

    name: str
    path: Path
    train: list[TrainPoint] = field(default_factory=list)
    evals: list[EvalPoint] = field(default_factory=list)

    @property
    def has_tokens(self) -> bool:
        """Whether any record counts tokens (files older than that field do not)."""
        return any(p.tokens is not None for p in [*self.train, *self.evals])

    @property
    def last_iter(self) -> int:
        return max((p.iter for p in [*self.train, *self.evals]), default=0)

    @property
    def best_val(self) -> tuple[int, float] | None:
        """(iteration, loss) of the lowest val loss, or None before a finite one."""
        points = [(p.val_loss, p.iter) for p in self.evals if p.val_loss is not None]
        if not points:
            return None
        loss, it = min(points)
        return it, loss


# -- loading ---------------------------------------------------------------------------------


def load_run(path: str | Path) -> Run:
    """Read the run in directory ``path`` (or its ``metrics.jsonl`` given directly)."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == METRICS_FILE:
        path = path.parent
    metrics = path / METRICS_FILE
    if not path.exists():
        raise MetricsError(
            f"{path} does not exist: plot takes run directories, the --out-dir of nanogpt train"
        )
    if not metrics.is_file():
        raise MetricsError(
            f"no {METRICS_FILE} in {path}: plot takes run directories, "
            "the --out-dir of nanogpt train"
        )
    run = Run(name=path.resolve().name or str(path), path=path)
    train: dict[int, TrainPoint] = {}
    evals: dict[int, EvalPoint] = {}
    for number, record in read_records(metrics):
        kind = record.get("kind")
        try:
            if kind == "train":
                p = TrainPoint(
                    iter=_int(record, "iter", required=True),  # type: ignore[arg-type]
                    tokens=_int(record, "tokens"),
                    loss=_float(record, "loss"),
                    lr=_float(record, "lr"),
                )
                train[p.iter] = p
            elif kind == "eval":
                e = EvalPoint(
                    iter=_int(record, "iter", required=True),  # type: ignore[arg-type]
                    tokens=_int(record, "tokens"),
                    train_loss=_float(record, "train_loss"),
                    val_loss=_float(record, "val_loss"),
                    lr=_float(record, "lr"),
                )
                evals[e.iter] = e
            # Other kinds are left for whoever writes them: newer files stay readable.
        except ValueError as err:
            raise MetricsError(f"{metrics}, line {number}: {err}") from None
    if not train and not evals:
        raise MetricsError(
            f"no train or eval records in {metrics} yet: a run logs every --log-interval "
            "steps and evaluates every --eval-interval steps; try again later"
        )
    # Keyed by iteration, so a run resumed from an earlier checkpoint (which logs the same
    # iterations again) shows its latest records once, and sorted for drawing lines.
    run.train = [train[i] for i in sorted(train)]
    run.evals = [evals[i] for i in sorted(evals)]
    return run


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Read several runs; runs that share a directory name are named by their parent too."""
    runs = [load_run(p) for p in paths]
    if not runs:
        raise MetricsError("no run directories given")
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            resolved = run.path.resolve()
            run.name = f"{resolved.parent.name}/{resolved.name}"
    return runs


def _float(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:  # missing, or null: the writer's spelling of NaN and infinity
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} is {value!r}, not a number")
    return float(value) if math.isfinite(value) else None


def _int(record: dict[str, Any], key: str, required: bool = False) -> int | None:
    value = record.get(key)
    if value is None:
        if required:
            raise ValueError(f"a {record.get('kind')} record without {key}")
        return None
    # json reads NaN and Infinity too; neither is an iteration or a token count.
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value != int(value)
    ):
        raise ValueError(f"{key} is {value!r}, not a whole number")
    return int(value)


# -- terminal chart --------------------------------------------------------------------------


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
    if width < MIN_WIDTH:
        raise MetricsError(f"a chart needs at least {MIN_WIDTH} columns, not {width}")
    if height < MIN_HEIGHT:
        raise MetricsError(f"a chart needs at least {MIN_HEIGHT} rows, not {height}")
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


# -- PNG -------------------------------------------------------------------------------------


def write_png(
    runs: Sequence[Run],
    path: str | Path,
    *,
    size: tuple[float, float] = (12.0, 8.0),
    dpi: int = 100,
) -> list[str]:
    """Draw loss vs iteration, loss vs tokens and learning rate vs iteration into ``path``.

    The format follows the file's suffix (``.png``; ``.svg`` and ``.pdf`` work too).
    Returns notes for the user, such as runs left out of the tokens panel.
    """
    try:
        # matplotlib itself first: a missing package fails here, whatever is cached.
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        raise MetricsError(MATPLOTLIB_HINT) from None

    path = Path(path).expanduser()
    # A Figure with its own Agg canvas, not pyplot: no global state, no GUI backend, and
    # safe to call from a program that uses pyplot itself.
    fig = Figure(figsize=size, dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    fmt = path.suffix.lstrip(".").lower()
    supported = canvas.get_supported_filetypes()
    if fmt not in supported:
        raise MetricsError(
            f"cannot write {path}: give a file name ending in .png "
            "(.svg, .pdf and matplotlib's other image formats work too)"
        )

    grid = fig.add_gridspec(2, 2, height_ratios=(3, 2))
    ax_iter = fig.add_subplot(grid[0, :])
    ax_tokens = fig.add_subplot(grid[1, 0])
    ax_lr = fig.add_subplot(grid[1, 1])
    colors = [f"C{i % 10}" for i in range(len(runs))]
    notes: list[str] = []

    for run, color in zip(runs, colors, strict=True):
        _loss_series(ax_iter, run, color, lambda p: p.iter)
        _line(
            ax_lr,
            _lr_points(run),
            color=color,
            linewidth=1.5,
        )
        if run.has_tokens:
            _loss_series(ax_tokens, run, color, lambda p: p.tokens)
        else:
            notes.append(
                f"{run.name} has no token counts (metrics.jsonl from an older nanogpt): "
                "left out of loss vs tokens"
            )

    ax_iter.set(title="Loss vs iteration", xlabel="iteration", ylabel="loss")
    ax_tokens.set(title="Loss vs tokens", xlabel="tokens seen", ylabel="loss")
    ax_lr.set(title="Learning rate vs iteration", xlabel="iteration", ylabel="learning rate")
    ax_tokens.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _si(x)))
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if not any(r.has_tokens for r in runs):
        ax_tokens.text(
            0.5,
            0.5,
            "no token counts in these runs",
            ha="center",
            va="center",
            transform=ax_tokens.transAxes,
            color="gray",
        )
    for ax in (ax_iter, ax_tokens, ax_lr):
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.01)

    # One legend for the runs (by colour) and the series (by line style), drawn in grey so
    # it reads the same for any number of runs.
    handles = [
        Line2D([], [], color=c, linewidth=2.5, label=r.name)
        for r, c in zip(runs, colors, strict=True)
    ]
    handles += [
        Line2D([], [], color="gray", linewidth=1, alpha=0.7, label="training loss"),
        Line2D([], [], color="gray", marker="o", markersize=4, label="val loss"),
        Line2D([], [], color="gray", linestyle="--", alpha=0.7, label="train loss (eval)"),
    ]
    ax_iter.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format=fmt)
    except OSError as e:
        raise MetricsError(f"cannot write {path}: {e.strerror or e}") from None
    return notes


def _loss_series(ax: Any, run: Run, color: str, x: Any) -> None:
    """Training loss (thin line), val loss (line with markers), eval train loss (dashed)."""
    _line(ax, [(x(p), p.loss) for p in run.train], color=color, linewidth=1, alpha=0.6)
    _line(
        ax,
        [(x(e), e.val_loss) for e in run.evals],
        color=color,
        linewidth=1.8,
        marker="o",
        markersize=4,
    )
    _line(
        ax,
        [(x(e), e.train_loss) for e in run.evals],
        color=color,
        linewidth=1.2,
        linestyle="--",
        alpha=0.7,
    )


def _lr_points(run: Run) -> list[tuple[int | None, float | None]]:
    # Evaluations add the learning rate at iteration 0 (and at the last step), which the
    # training records, written after each logged step, never hold.
    lrs = {e.iter: e.lr for e in run.evals}
    lrs.update({p.iter: p.lr for p in run.train})
    return [(it, lrs[it]) for it in sorted(lrs)]


def _line(ax: Any, points: Sequence[tuple[int | None, float | None]], **style: Any) -> None:
    # A missing value is NaN for matplotlib: the line breaks there instead of jumping.
    xs = [x for x, _ in points if x is not None]
    ys = [math.nan if y is None else y for x, y in points if x is not None]
    if xs:
        ax.plot(xs, ys, **style)


def _si(value: float) -> str:
    """1500000 -> 1.5M: token counts run into billions."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"
