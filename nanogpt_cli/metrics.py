"""``metrics.jsonl``: one JSON object per training log and per evaluation, also sent to an
optional tracker (TensorBoard, Weights & Biases)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from .errors import MetricsError
from .safe_files import open_for_writing, os_error_line
from .trackers import Tracker


class MetricsWriter:
    """Appends records to ``out_dir/metrics.jsonl``, flushed as they come, and hands each
    to the ``trackers``. The file is never opened through a symbolic link (whatever it
    points to stays untouched), and an OS error (disk full, read-only) is a ``MetricsError``
    of one line."""

    def __init__(self, path: Path, append: bool = True, trackers: Sequence[Tracker] = ()) -> None:
        self.path = path
        self.trackers = list(trackers)
        try:
            self._file: TextIO = open_for_writing(path, append)
        except OSError as e:
            raise MetricsError(os_error_line(e, path, "--out-dir")) from None

    def write(self, kind: str, **values: Any) -> None:
        record = {"kind": kind, "time": round(time.time(), 3)}
        for key, value in values.items():
            # JSON has no NaN or infinity; a missing value says the same thing honestly.
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            record[key] = value
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as e:
            raise MetricsError(os_error_line(e, self.path, "--out-dir")) from None
        for tracker in self.trackers:
            tracker.log(kind, int(values.get("iter", 0)), values)

    def close(self, failed: bool = False) -> None:
        """Close the file and the trackers; ``failed`` tells them the run stopped on an error."""
        try:
            self._file.close()
        except OSError as e:  # what a failed write left in the buffer
            if not failed:
                raise MetricsError(os_error_line(e, self.path, "--out-dir")) from None
        finally:
            for tracker in self.trackers:
                tracker.close(failed=failed)


class NullMetrics:
    """What the processes other than rank 0 of a distributed run write: nothing."""

    def write(self, kind: str, **values: Any) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        pass


METRICS_FILE = "metrics.jsonl"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    return [record for _, record in read_records(path)]


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each record of a ``metrics.jsonl`` file.

    A last line without its newline is a record being written right now (or cut short by a
    crash) and is skipped; any other line that is not a JSON object is an error naming it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MetricsError(f"{path} is not a metrics file (not UTF-8 text: {e.reason})") from None
    except OSError as e:
        raise MetricsError(f"cannot read {path}: {e.strerror or e}") from None
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                return
            raise MetricsError(
                f"{path}, line {number} is not valid JSON ({e.msg}); remove or fix that line"
            ) from None
        if not isinstance(record, dict):
            raise MetricsError(f"{path}, line {number} is not a JSON object; remove that line")
        yield number, record
