"""``nanogpt plot``: loss curves of training runs, in the terminal or as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..plot.terminal import MAX_CHART_HEIGHT, MAX_CHART_WIDTH, MIN_HEIGHT, MIN_WIDTH
from .complete import complete_run


def plot(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories (the --out-dir of nanogpt train), each with a metrics.jsonl.",
            autocompletion=complete_run,
            show_default=False,
        ),
    ],
    output: Annotated[
        Optional[Path],
        typer.Option(
            "-o",
            "--output",
            help="Write the plots to this image (.png; .svg and .pdf work too) instead of "
            "drawing a chart in the terminal. Needs matplotlib: the plot extra.",
            show_default=False,
        ),
    ] = None,
    width: Annotated[
        Optional[int],
        typer.Option(
            "--width",
            min=MIN_WIDTH,
            max=MAX_CHART_WIDTH,
            help="Terminal chart width in columns.",
            show_default="the terminal's, 40 to 100; 72 when piped",
        ),
    ] = None,
    height: Annotated[
        int,
        typer.Option(
            "--height",
            min=MIN_HEIGHT,
            max=MAX_CHART_HEIGHT,
            help="Terminal chart height in rows.",
        ),
    ] = 16,
) -> None:
    """Plot the losses of one or more runs.

    Without -o: val and training loss vs iteration, drawn in the terminal. With -o: a PNG
    with loss vs iteration, loss vs tokens and learning rate vs iteration, a colour per run.

    Examples:
      nanogpt plot out-shakespeare-char
      nanogpt plot out-small out-large -o loss.png
      watch -n 10 nanogpt plot out-shakespeare-char    (a run in progress)
    """
    # Neither import loads torch; matplotlib is imported by write_png alone.
    from ..log import get_logger
    from ..plot import load_runs, render_chart, write_png

    runs = load_runs(run_dirs)
    if output is None:
        from rich.console import Console

        # Console drops the colours where stdout is not a terminal (a pipe, a file).
        Console(highlight=False).print(
            render_chart(runs, width=width, height=height), soft_wrap=True
        )
        return
    logger = get_logger(__name__)
    for note in write_png(runs, output):
        logger.info(f"note: {note}")
    logger.info(f"wrote {output}")
