"""What a run will cost, said before it starts, and what it made, said when it ends.

The estimate is arithmetic on a few timed passes (``TrainStep.measure``): the steps left
times a step's time, plus the evaluations the loop will make times one evaluation's time.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..state import TrainResult

LONG_RUN_S = 30 * 60  # past this, a run off CUDA is told about a faster way
SPLITS_EVALUATED = 2  # train and val


@dataclass
class RunEstimate:
    """``steps`` optimizer steps of ``step_s`` and ``evaluations`` of ``eval_s`` each."""

    steps: int
    step_s: float
    evaluations: int
    eval_s: float

    @property
    def total_s(self) -> float:
        return self.steps * self.step_s + self.evaluations * self.eval_s

    def describe(self) -> str:
        text = f"about {duration(self.total_s)}: {self.steps:,} steps of {seconds(self.step_s)}"
        if self.evaluations:
            text += f" and {self.evaluations:,} evaluations of {seconds(self.eval_s)}"
        return text


def evaluations(start: int, max_iters: int, interval: int, resumed: bool) -> int:
    """How many evaluations the training loop makes from iteration ``start``: at every
    multiple of ``interval`` and at the end, except the one a resumed run already made."""
    count = sum(1 for it in range(start, max_iters + 1) if it % interval == 0 or it == max_iters)
    if resumed and (start % interval == 0 or start == max_iters):
        count -= 1
    return count


def estimate_run(
    start: int,
    max_iters: int,
    eval_interval: int,
    eval_batches: int,
    step_s: float,
    eval_batch_s: float,
    resumed: bool = False,
) -> RunEstimate:
    """The estimate for a run at iteration ``start`` of ``max_iters``, whose evaluations
    each make ``eval_batches`` forward passes per split of ``eval_batch_s``."""
    return RunEstimate(
        steps=max(0, max_iters - start),
        step_s=step_s,
        evaluations=evaluations(start, max_iters, eval_interval, resumed),
        eval_s=SPLITS_EVALUATED * eval_batches * eval_batch_s,
    )


def summary(result: TrainResult) -> str:
    """One line: how long, how many tokens at what rate, the best val loss, and where the
    checkpoint is."""
    best = f"{result.best_val_loss:.4f}" if result.best_val_loss < float("inf") else "n/a"
    rate = result.tokens / result.seconds if result.seconds > 0 else 0.0
    where = f"checkpoint in {result.out_dir}" if result.saved else "no new checkpoint"
    return (
        f"done in {duration(result.seconds)}: iteration {result.iter_num}, "
        f"{result.tokens:,} tokens at {rate:,.0f} tokens/s, best val loss {best}; {where}"
    )


def duration(s: float) -> str:
    """``37h12m``, ``4m05s``, ``12s``."""
    s = max(0, round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def seconds(s: float) -> str:
    """A short time: ``850 ms``, ``2.4 s``, ``1m12s``."""
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    return duration(s)
