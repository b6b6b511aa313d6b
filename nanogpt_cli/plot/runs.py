"""The runs ``nanogpt plot`` draws: the ``metrics.jsonl`` of run directories, read into
training and evaluation points."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MetricsError
from ..metrics import METRICS_FILE, read_records

# One colour per run, in the terminal (rich names) and in the PNG (matplotlib's cycle).
TERMINAL_COLORS = ("cyan", "magenta", "yellow", "green", "blue", "red")


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
