"""Loss curves as a PNG, with matplotlib (the optional ``plot`` extra, imported only
here)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MetricsError
from .runs import Run

MATPLOTLIB_HINT = (
    "nanogpt plot -o needs matplotlib: pip install 'nanogpt-cli[plot]' "
    "(or run without -o for a terminal chart)"
)


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
