"""Optional metric sinks beside ``metrics.jsonl``: TensorBoard and Weights & Biases.

Each is imported only when chosen (``--tracker tensorboard|wandb``) and comes from an extra
(``pip install 'nanogpt-cli[tensorboard]'`` / ``'nanogpt-cli[wandb]'``). A tracker gets the
same records as ``metrics.jsonl``: a kind (``train``, ``eval``), the iteration, and values.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from .config import TrackerName
from .errors import ConfigError

TRACKERS: tuple[str, ...] = typing.get_args(TrackerName)
TENSORBOARD_DIR = "tensorboard"  # under out_dir
WANDB_ID_FILE = "wandb-run-id"  # under out_dir: a resumed run continues the same W&B run


class Tracker(Protocol):
    def log(self, kind: str, step: int, values: Mapping[str, Any]) -> None: ...

    def close(self, failed: bool = False) -> None: ...


def numbers(kind: str, values: Mapping[str, Any]) -> dict[str, float]:
    """``{"train/loss": 1.2, ...}``: the finite numeric values of a record."""
    return {
        f"{kind}/{key}": float(value)
        for key, value in values.items()
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and key != "iter"
        and math.isfinite(value)
    }


class TensorBoard:
    """Scalars under ``out_dir/tensorboard``: ``tensorboard --logdir out_dir``."""

    def __init__(self, out_dir: Path, config: Mapping[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "--tracker tensorboard needs the tensorboard package: "
                "pip install 'nanogpt-cli[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(out_dir / TENSORBOARD_DIR))
        self.writer.add_text("config", _as_markdown(config))

    def log(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        for tag, value in numbers(kind, values).items():
            self.writer.add_scalar(tag, value, step)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandB:
    """A Weights & Biases run; a resumed training run continues the same W&B run.

    The x-axis is the training iteration, logged as the ``iter`` metric rather than as W&B's
    own step: a run resumed from a checkpoint older than its last record logs earlier
    iterations again, which W&B's monotonic step would drop.
    """

    def __init__(
        self,
        out_dir: Path,
        config: Mapping[str, Any],
        project: str,
        run_name: str | None,
        resumed: bool,
    ) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "--tracker wandb needs the wandb package: pip install 'nanogpt-cli[wandb]'"
            ) from None
        id_file = out_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if resumed and id_file.is_file() else None
        self.run = wandb.init(
            project=project,
            name=run_name or out_dir.resolve().name,
            config=dict(config),
            dir=str(out_dir),
            id=run_id,
            resume="allow" if run_id else None,
        )
        id_file.write_text(self.run.id + "\n")
        self.run.define_metric("iter")
        for kind in ("train", "eval"):
            self.run.define_metric(f"{kind}/*", step_metric="iter")

    def log(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        self.run.log({**numbers(kind, values), "iter": step})

    def close(self, failed: bool = False) -> None:
        # A run that stopped on an error shows as failed in W&B, not as finished.
        self.run.finish(exit_code=1 if failed else 0)


def make_tracker(
    name: str,
    out_dir: Path,
    config: Mapping[str, Any],
    *,
    project: str = "nanogpt",
    run_name: str | None = None,
    resumed: bool = False,
) -> Tracker | None:
    """The tracker called ``name`` (one of ``TRACKERS``), or None for ``none``."""
    if name == "none":
        return None
    if name == "tensorboard":
        return TensorBoard(out_dir, config)
    if name == "wandb":
        return WandB(out_dir, config, project, run_name, resumed)
    raise ConfigError(f"unknown tracker {name!r}; use {', '.join(TRACKERS)}")


def _as_markdown(config: Mapping[str, Any]) -> str:
    rows = [
        f"| {group} | {key} | {value} |"
        for group, values in config.items()
        for key, value in (values.items() if isinstance(values, Mapping) else [])
    ]
    return "\n".join(["| group | option | value |", "| --- | --- | --- |", *rows])
