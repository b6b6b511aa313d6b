"""What the benchmarks share: the spread of repeated measurements, device synchronisation,
the machine's matrix-multiply rate and peak memory."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..data.dataset import open_dataset
from ..errors import DatasetError
from ..runtime import synchronize

SYNTHETIC_VOCAB = 50304  # GPT-2's vocabulary padded to a multiple of 64, as nanoGPT does


@dataclass
class Spread:
    """Summary of repeated measurements (milliseconds, or whatever was measured)."""

    median: float
    min: float
    max: float
    p25: float
    p75: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        ordered = sorted(values)
        if len(ordered) >= 2:
            q = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q = [ordered[0]] * 3
        return cls(
            median=statistics.median(ordered),
            min=ordered[0],
            max=ordered[-1],
            p25=q[0],
            p75=q[2],
            n=len(ordered),
        )


def matmul_tflops(
    device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5
) -> float:
    """The rate of one large square matrix multiply on ``device`` in ``dtype`` (TFLOP/s):
    what this machine's matrix units reach, the reference for a compute-bound step. The
    best of ``repeats`` runs: interference only ever slows a run down. On a CPU in float32
    both the BLAS and oneDNN are timed and the faster counts (on some
    processors oneDNN can be the faster one: ``kernels.onednn``)."""
    size = size or (2048 if device.type == "cpu" else 8192)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    products: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = [torch.mm]
    if device.type == "cpu" and dtype == torch.float32 and _onednn_works():
        from ..kernels.onednn import onednn_mm

        products.append(onednn_mm)
    times = []
    for product in products:
        for i in range(repeats + 2):
            synchronize(device)
            start = time.perf_counter()
            product(a, b)
            synchronize(device)
            if i >= 2:  # the first two warm up the kernels and the allocator
                times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times) / 1e12


def _onednn_works() -> bool:
    """Whether oneDNN's product can be timed here (the floor's rate is the machine's best,
    whichever kernels the step uses)."""
    from ..kernels.onednn import signature_problem

    return signature_problem() is None


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """The peak memory of this process so far: the CUDA allocator's, or resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA allocator peak"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kilobytes on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "peak RSS (process)"


def dataset_vocab(cfg: TrainConfig) -> int | None:
    """The vocabulary of the preset's dataset, if it is prepared (so synthetic data has the
    shape of the real model)."""
    try:
        return open_dataset(cfg.data.dataset, cfg.data.data_dir).vocab_size
    except DatasetError:
        return None
