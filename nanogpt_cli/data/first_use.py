"""Built-in datasets prepared on first use: ``open_or_prepare``.

``nanogpt train`` (and ``finetune``, ``eval``, ``bench``) on ``shakespeare-char`` or
``shakespeare`` prepares the dataset first when it is not there yet, exactly as
``nanogpt prepare`` would (download, cache, checksum); any other dataset must be prepared
by the user, and ``open_dataset`` says how.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..log import get_logger
from ..paths import data_root, data_root_origin, dataset_dir
from .build import PrepareResult
from .dataset import META_FILE, Dataset, open_dataset
from .prepare import prepare_shakespeare, prepare_shakespeare_char

logger = get_logger(__name__)

# The datasets nanogpt can prepare with no input from the user.
AUTO_PREPARE: dict[str, Callable[..., PrepareResult]] = {
    "shakespeare-char": prepare_shakespeare_char,
    "shakespeare": prepare_shakespeare,
}


class ProcessGroup(Protocol):
    """The processes of a distributed run (``train.distributed.Dist``)."""

    @property
    def main(self) -> bool: ...

    def barrier(self) -> None: ...


def prepare_if_missing(name: str, data_dir: str | Path | None = None) -> PrepareResult | None:
    """Prepare built-in dataset ``name`` if it has no ``meta.json`` yet; None otherwise
    (prepared already, or not a dataset nanogpt can prepare by itself)."""
    if name not in AUTO_PREPARE or (dataset_dir(name, data_dir) / META_FILE).exists():
        return None
    root = data_root(data_dir)
    logger.info(
        f"dataset '{name}' is not prepared in {root} ({data_root_origin(data_dir)}); "
        f"preparing it first, as `nanogpt prepare {name}` does"
    )
    return AUTO_PREPARE[name](data_dir=data_dir)


def open_or_prepare(
    name: str, data_dir: str | Path | None = None, group: ProcessGroup | None = None
) -> Dataset:
    """``open_dataset``, after preparing a built-in dataset that is not prepared yet.

    In a distributed run (``group``) the main process prepares while the others wait for it
    at a barrier; every process must call this (the data directory is shared by all).
    """
    if group is None:
        prepare_if_missing(name, data_dir)
    elif name in AUTO_PREPARE:  # the same decision in every process: all reach the barrier
        failed: Exception | None = None
        if group.main:
            try:
                prepare_if_missing(name, data_dir)
            except Exception as e:  # raised after the barrier: the others do not wait for it
                failed = e
        group.barrier()
        if failed is not None:
            raise failed
    return open_dataset(name, data_dir)
