"""The batch-loader benchmark behind ``nanogpt bench data``."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from ..config import TrainConfig
from ..data.first_use import open_or_prepare
from ..data.loader import BatchLoader
from ..errors import ConfigError
from ..runtime import resolve_device
from .common import Spread, synchronize


@dataclass
class DataBench:
    """Batches per second of the training loader on a prepared dataset."""

    dataset: str
    device: str
    batch_size: int
    block_size: int
    batches: int
    batches_per_s: Spread
    tokens_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def bench_data(cfg: TrainConfig, *, batches: int = 500, repeats: int = 3) -> DataBench:
    """Draw ``batches`` batches from ``cfg``'s dataset through the training loader (onto the
    device, as training does), ``repeats`` times."""
    if batches < 1 or repeats < 1:
        raise ConfigError("--batches and --repeats must be at least 1")
    device = resolve_device(cfg.system.device)
    dataset = open_or_prepare(cfg.data.dataset, cfg.data.data_dir)
    block, batch = cfg.model.block_size, cfg.data.batch_size
    loader = BatchLoader(dataset.split_path("train"), block, batch, device, seed=0)
    rates = []
    try:
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(batches):
                loader.next()
            synchronize(device)
            rates.append(batches / (time.perf_counter() - start))
    finally:
        loader.close()
    spread = Spread.of(rates)
    return DataBench(
        dataset=dataset.name,
        device=str(device),
        batch_size=batch,
        block_size=block,
        batches=batches,
        batches_per_s=spread,
        tokens_per_s=spread.median * batch * block,
    )
