"""Which kernels are faster on this machine: measured once, then read from a cache.

``--cpu-kernels auto`` turns a kernel on only where it measured faster than the reference
op on this machine. Each kernel's ``measure`` times it against the reference on a few
representative shapes, alternating the two (the best of several runs each: interference
only ever slows a run down); a kernel counts as faster when it took at most ``MARGIN`` of
the reference's time. The verdicts are cached per machine (processor, thread count, torch
version, and nanogpt's) in the user cache directory, so the measurement costs about a
second once. A measurement runs with gradients on and draws its random inputs from a forked
generator: calibrating leaves the caller's random stream and grad mode as they were.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

from ..errors import first_line
from ..log import get_logger
from ..paths import cache_root

logger = get_logger(__name__)

CACHE_FILE = "cpu-kernels.json"
MARGIN = 0.97  # a kernel must save at least 3% of the reference's time
REPEATS = 5

Timings = tuple[float, float]  # seconds: (kernel, reference)
Measure = Callable[[], Timings]


def cache_path() -> Path:
    return cache_root() / CACHE_FILE


def machine_key() -> str:
    """What the verdicts depend on: the processor, the threads torch uses, torch's version
    and nanogpt's (whose kernels may change)."""
    from .. import __version__

    return (
        f"{cpu_name()} | {torch.get_num_threads()} threads | torch {torch.__version__} | "
        f"nanogpt {__version__}"
    )


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def best_times(kernel: Callable[[], Any], reference: Callable[[], Any], repeats: int) -> Timings:
    """The best of ``repeats`` runs of each, alternating, after one untimed run of each."""
    kernel()
    reference()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((kernel, times[0]), (reference, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def _read(path: Path) -> dict[str, dict[str, Any]]:
    """This machine's entries of the cache (a file that is missing, unreadable or not what
    this module writes counts as empty)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def _write(path: Path, data: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only means measuring again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        logger.debug(f"could not cache the CPU kernel calibration in {path}: {e}")


def cached(name: str, path: Path | None = None) -> bool | None:
    """The cached verdict on kernel ``name`` for this machine, or None if it has none."""
    entry = _read(path or cache_path()).get(machine_key(), {}).get(name)
    if isinstance(entry, dict) and isinstance(entry.get("on"), bool):
        return bool(entry["on"])
    return None


def faster(name: str, measure: Measure, path: Path | None = None) -> bool:
    """Whether kernel ``name`` is faster than its reference on this machine: the cached
    verdict, else ``measure()`` now (and cache it)."""
    path = path or cache_path()
    verdict = cached(name, path)
    if verdict is not None:
        return verdict
    logger.info(f"timing CPU kernel {name} against PyTorch's op on this machine (once)")
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
            kernel_s, reference_s = measure()
    except Exception as e:
        logger.warning(f"CPU kernel {name} could not be timed and stays off ({first_line(e)})")
        return False
    on = kernel_s <= MARGIN * reference_s
    logger.debug(
        f"CPU kernel {name}: {kernel_s * 1e3:.2f} ms against {reference_s * 1e3:.2f} ms: "
        f"{'on' if on else 'off'}"
    )
    data = _read(path)  # another process may have written meanwhile
    data.setdefault(machine_key(), {})[name] = {
        "on": on,
        "kernel_ms": round(kernel_s * 1e3, 4),
        "reference_ms": round(reference_s * 1e3, 4),
        "measured": date.today().isoformat(),
    }
    _write(path, data)
    return on
