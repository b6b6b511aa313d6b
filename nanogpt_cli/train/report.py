"""What a run reports at each log interval: the log line, the metrics record and the
progress bar's status, from the steps the interval timed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..config import TrainConfig
from ..log import get_logger
from ..metrics import MetricsWriter, NullMetrics
from ..progress import Progress
from ..state import TrainState
from .estimate import duration
from .health import Health
from .step import StepReport

if TYPE_CHECKING:
    import torch


class Trainer(Protocol):
    """What reporting reads of a run (``engine.Trainer``)."""

    cfg: TrainConfig
    state: TrainState
    model: Any
    tokens_per_iter: int
    peak: float | None
    device: torch.device
    health: Health


logger = get_logger(__name__)

LONG_CPU_RUN_S = 3600  # a CPU run expected to take longer is warned about, once


def eta(trainer: Trainer, dt: float) -> float:
    """Seconds left for the run's remaining steps at ``dt`` seconds each."""
    return (trainer.cfg.optim.max_iters - trainer.state.iter_num) * dt


def report_interval(
    trainer: Trainer,
    metrics: MetricsWriter | NullMetrics,
    bar: Progress,
    lr: float,
    report: StepReport,
    dt: float,
) -> bool:
    """Log, record and show one log interval of ``trainer``'s run (``dt`` seconds per
    step), and check its loss; True when a CPU run has more than an hour left."""
    state = trainer.state
    loss, grad_norm, clip_frac = report.loss, report.grad_norm, report.clip_frac
    tokens_per_s = trainer.tokens_per_iter / dt
    flops_per_iter = trainer.model.flops_per_token() * trainer.tokens_per_iter
    mfu = flops_per_iter / dt / trainer.peak if trainer.peak else None
    left = eta(trainer, dt)
    grad = (
        f", grad norm {grad_norm:.2f} (clipped {clip_frac:.0%})"
        if grad_norm is not None and clip_frac is not None
        else ""
    )
    line = (
        f"iter {state.iter_num}: loss {loss:.4f}, lr {lr:.2e}{grad}, "
        f"{dt * 1000:.1f} ms/iter, {tokens_per_s:,.0f} tok/s, "
        f"mfu {'n/a' if mfu is None else f'{mfu:.1%}'}, eta {duration(left)}"
    )
    fields = {
        "iter": state.iter_num,
        "loss": loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "clip_frac": clip_frac,
        "ms": dt * 1000,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu,
    }
    (logger.debug if bar.live else logger.info)(line, **fields)
    bar.status(f"loss {loss:.4f} · {tokens_per_s:,.0f} tok/s · {dt * 1000:.1f} ms/it ·")
    metrics.write(
        "train",
        iter=state.iter_num,
        tokens=state.tokens_seen,
        loss=loss,
        lr=lr,
        ms=dt * 1000,
        tokens_per_s=tokens_per_s,
        mfu=mfu,
        grad_norm=grad_norm,
        clip_frac=clip_frac,
    )
    trainer.health.check_loss(loss, grad_norm, state.iter_num)
    return trainer.device.type == "cpu" and left > LONG_CPU_RUN_S
