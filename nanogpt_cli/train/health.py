"""Watching a run's health: skipped steps and loss spikes.

``TrainStep`` skips a step whose loss or gradient is not finite (the weights stay as they
were); ``Health`` reports each skipped step and stops the run after ``max_bad_steps`` in a
row, and warns when an interval's loss jumps well above the recent ones.
"""

from __future__ import annotations

import math

from ..errors import TrainingError
from ..log import get_logger
from .step import StepReport

logger = get_logger(__name__)

# An interval's loss above SPIKE x the moving average (factor EMA per interval) of the
# ones before is a spike, once SPIKE_AFTER intervals have set the average.
SPIKE, EMA, SPIKE_AFTER = 1.5, 0.1, 5


class Health:
    def __init__(self, max_bad_steps: int) -> None:
        self.max_bad_steps = max_bad_steps
        self.bad_streak = 0  # steps skipped in a row
        self.loss_ema: float | None = None
        self.intervals = 0

    def check_steps(self, report: StepReport, last_iter: int) -> None:
        """Log the steps of ``report`` (up to iteration ``last_iter``) that were skipped,
        and stop the run after ``max_bad_steps`` of them in a row."""
        first = last_iter - len(report.bad) + 1
        for i, bad in enumerate(report.bad):
            if not bad:
                self.bad_streak = 0
                continue
            self.bad_streak += 1
            logger.warning(
                f"iteration {first + i} skipped: loss {report.losses[i]:.4g}, gradient norm "
                f"{report.norms[i]:.4g} (not finite); the weights are unchanged",
                iter=first + i,
            )
            if self.bad_streak >= self.max_bad_steps:
                raise TrainingError(
                    f"{self.bad_streak} steps in a row had a non-finite loss or gradient (up "
                    f"to iteration {first + i}); the run stops with the weights of before. "
                    "Lower --learning-rate, set --grad-clip, or train in float32/bfloat16; "
                    "resume from the last checkpoint with --resume"
                )

    def check_loss(self, loss: float, grad_norm: float | None, iter_num: int) -> None:
        """Warn when an interval's loss jumps well above the recent ones (a spike often
        follows a large gradient: the norm is in the message)."""
        if not math.isfinite(loss):
            return
        recent = self.loss_ema
        if recent is not None and self.intervals >= SPIKE_AFTER and loss > SPIKE * recent:
            norm = f", gradient norm {grad_norm:.3g}" if grad_norm is not None else ""
            logger.warning(
                f"loss spike at iteration {iter_num}: {loss:.4f}, "
                f"{loss / recent:.1f}x the recent {recent:.4f}{norm}",
                iter=iter_num,
                loss=loss,
                grad_norm=grad_norm,
            )
        self.loss_ema = loss if recent is None else recent + EMA * (loss - recent)
        self.intervals += 1
