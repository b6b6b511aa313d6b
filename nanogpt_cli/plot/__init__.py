"""Loss curves of training runs: a PNG with matplotlib, or a chart drawn in the terminal.

A run is a directory with the ``metrics.jsonl`` that ``nanogpt train`` writes (see
docs/training.md). ``runs`` reads it, ``terminal`` and ``png`` draw it; they raise
:class:`MetricsError` and never print. Nothing here imports torch (``nanogpt plot`` starts
in a fraction of a second), nor matplotlib until a PNG is asked for (matplotlib is the
optional ``plot`` extra).
"""

from .png import MATPLOTLIB_HINT, write_png
from .runs import METRICS_FILE, EvalPoint, Run, TrainPoint, load_run, load_runs
from .terminal import render_chart

__all__ = [
    "MATPLOTLIB_HINT",
    "METRICS_FILE",
    "EvalPoint",
    "Run",
    "TrainPoint",
    "load_run",
    "load_runs",
    "render_chart",
    "write_png",
]
