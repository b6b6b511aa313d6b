"""Where a training run stands (``TrainState``, saved in every checkpoint) and how it ended
(``TrainResult``). Plain data, no torch: checkpoints, the engine and the launcher share it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainState:
    """Where training stands: enough to continue as if it had never stopped."""

    iter_num: int = 0
    best_val_loss: float = math.inf
    tokens_seen: int = 0
    rng: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """How a training run ended."""

    out_dir: Path
    iter_num: int
    best_val_loss: float
    val_loss: float | None
    train_loss: float | None
    saved: bool
    seconds: float
    tokens: int = 0  # trained on in this run (a resumed run counts from where it resumed)
    params: int = 0  # the model's, position embeddings left out as GPT-2 counts; 0: unknown
