"""Random training windows from a token file.

The file is memory-mapped once for the loader's life (nanoGPT re-creates its memmap every
batch). Each batch is one vectorized gather of ``batch_size`` windows of ``block_size + 1``
tokens; inputs and targets are views of it shifted by one. Mapped pages are released every so
often so that resident memory stays flat on corpora larger than RAM.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError

RELEASE_EVERY = 1000  # batches between releases of mapped pages


class TokenFile:
    """A headerless uint16 token file, mapped read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.tokens = np.frombuffer(self._mmap, dtype=np.uint16)

    def __len__(self) -> int:
        return len(self.tokens)

    def close(self) -> None:
        del self.tokens  # the array holds a view of the mapping, which must go first
        self._mmap.close()

    def release(self) -> None:
        """Drop mapped pages from this process (the OS page cache keeps them)."""
        if hasattr(self._mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Rows ``tokens[s : s + length]`` for each start, as one (len(starts), length) gather."""
        return self.tokens[starts[:, None] + np.arange(length)]


class BatchLoader:
    """(x, y) batches of random windows, x = tokens[i : i+T], y = tokens[i+1 : i+T+1]."""

    def __init__(
        self,
        path: Path,
        block_size: int,
        batch_size: int,
        device: torch.device,
        seed: int,
    ) -> None:
        self.file = TokenFile(path)
        self.block_size = block_size
        self.batch_size = batch_size
        self.device = device
        if len(self.file) <= block_size:
            raise DatasetError(
                f"{path} holds {len(self.file)} tokens, too few for windows of "
                f"--block-size {block_size} + 1; use a smaller --block-size"
            )
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self._pinned = device.type == "cuda"
        # On CUDA, batches go through page-locked buffers so the copy to the GPU runs
        # asynchronously; two of them, each refilled only once its previous copy finished.
        shape = (batch_size, block_size + 1)
        self._buffers = (
            [torch.empty(shape, dtype=torch.int64, pin_memory=True) for _ in range(2)]
            if self._pinned
            else []
        )
        self._copied: list[Any] = [None] * len(self._buffers)
        self._count = 0

    def close(self) -> None:
        self.file.close()

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]

    def skip(self) -> None:
        """Draw the next batch's windows without reading them (another process's batch)."""
        self.rng.integers(0, len(self.file) - self.block_size, size=self.batch_size)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._count += 1
        if self._count % RELEASE_EVERY == 0:
            self.file.release()
        starts = self.rng.integers(0, len(self.file) - self.block_size, size=self.batch_size)
        windows = self.file.windows(starts, self.block_size + 1)
        if self._pinned:
            slot = self._count % 2
            if self._copied[slot] is not None:
                self._copied[slot].synchronize()
            buf = self._buffers[slot]
            buf.numpy()[:] = windows
            batch = buf.to(self.device, non_blocking=True)
            self._copied[slot] = torch.cuda.Event()
            self._copied[slot].record(torch.cuda.current_stream(self.device))
        else:
            batch = torch.from_numpy(windows.astype(np.int64)).to(self.device)
        return batch[:, :-1], batch[:, 1:]


class RankBatches:
    """One process's share of the batches of a run over ``world`` processes.

    Every process draws the same stream of batches (the loader's seed is the run's) and
    reads only its own: of the ``per_step`` micro-batches of an optimizer step, process
    ``rank`` takes the ``rank``-th contiguous block of ``per_step // world``. An optimizer
    step therefore sees the same batches whatever the number of processes, and the loader's
    state at a step boundary (what a checkpoint of process 0 records) resumes any number.
    """

    def __init__(self, loader: BatchLoader, rank: int, world: int, per_step: int) -> None:
        self.loader, self.rank, self.world = loader, rank, world
        self.share = per_step // world
        self.per_step = per_step
        self._pos = 0  # index of the loader's next batch within the step
        self._skip_to_own()

    def _mine(self) -> bool:
        return self.rank * self.share <= self._pos < (self.rank + 1) * self.share

    def _skip_to_own(self) -> None:
        while not self._mine():
            self.loader.skip()
            self._pos = (self._pos + 1) % self.per_step

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.loader.next()
        self._pos = (self._pos + 1) % self.per_step
        # Skip the others' batches now, so the state between steps is at a step boundary.
        self._skip_to_own()
        return batch

    def state(self) -> dict[str, Any]:
        return self.loader.state()

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a state saved at a step boundary (by any number of processes)."""
        self.loader.load_state(state)
        self._pos = 0
        self._skip_to_own()

    def close(self) -> None:
        self.loader.close()


def fixed_windows(
    path: Path, block_size: int, count: int, seed: int, device: torch.device
) -> torch.Tensor:
    """``count`` random windows of ``block_size + 1`` tokens, drawn once (for evaluation)."""
    file = TokenFile(path)
    if len(file) <= block_size:
        raise DatasetError(
            f"{path} holds {len(file)} tokens, too few for windows of --block-size "
            f"{block_size} + 1; use a smaller --block-size"
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    starts = rng.integers(0, len(file) - block_size, size=count)
    windows = torch.from_numpy(file.windows(starts, block_size + 1).astype(np.int64))
    file.close()
    return windows.to(device)
