"""``metrics.jsonl``: one JSON object per training log and per evaluation, also sent to an
optional tracker (TensorBoard, Weights & Biases)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .trackers import Tracker


class MetricsWriter:
    """Appends records to ``out_dir/metrics.jsonl``, flushed as they come, and hands each
    to the ``trackers``."""

    def __init__(self, path: Path, append: bool = True, trackers: Sequence[Tracker] = ()) -> None:
        self.path = path
        self.trackers = list(trackers)
        mode = "a" if append else "w"
        self._file: TextIO = open(path, mode, encoding="utf-8")  # noqa: SIM115 - see close()

    def write(self, kind: str, **values: Any) -> None:
        record = {"kind": kind, "time": round(time.time(), 3)}
        for key, value in values.items():
            # JSON has no NaN or infinity; a missing value says the same thing honestly.
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            record[key] = value
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for tracker in self.trackers:
            tracker.log(kind, int(values.get("iter", 0)), values)

    def close(self) -> None:
        self._file.close()
        for tracker in self.trackers:
            tracker.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
