"""Shell completion of option values: presets, prepared datasets, checkpoints.

These run on every completion request (a Tab press), so they import nothing heavy and only
look at names on disk: no torch, no reading of checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import typer

# The files that make a directory a checkpoint (checkpoint.directory, checkpoint.unified and
# Hugging Face's config.json): a test keeps them in sync with the checkpoint package.
CHECKPOINT_FILES = ("checkpoint.json", "model.safetensors", "ckpt.pt", "config.json")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
DATASET_META = "meta.json"
METRICS_FILE = "metrics.jsonl"  # metrics.METRICS_FILE
GPT2_SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def complete_preset(incomplete: str) -> list[str]:
    from ..config import preset_names

    return [name for name in preset_names() if name.startswith(incomplete)]


def complete_dataset(ctx: typer.Context, incomplete: str) -> list[str]:
    """Datasets prepared in the data directory (``--data-dir`` if given on the line)."""
    from ..paths import data_root

    root = data_root(ctx.params.get("data_dir"))
    names = _children(root, lambda p: (p / DATASET_META).is_file())
    return [name for name in names if name.startswith(incomplete)]


def complete_checkpoint(incomplete: str) -> list[str]:
    """Checkpoint directories and files under the directory being typed."""
    return _paths(incomplete, _is_checkpoint, files=True)


def complete_init_from(incomplete: str) -> list[str]:
    """GPT-2 sizes, then checkpoints."""
    sizes = [size for size in GPT2_SIZES if size.startswith(incomplete)]
    return sizes + complete_checkpoint(incomplete)


def complete_run(incomplete: str) -> list[str]:
    """Run directories: those with a metrics.jsonl."""
    return _paths(incomplete, lambda p: (p / METRICS_FILE).is_file())


def _paths(incomplete: str, keep: Callable[[Path], bool], files: bool = False) -> list[str]:
    """Entries of the directory being typed that ``keep`` accepts, as typed so far."""
    folder, prefix = os.path.split(incomplete)
    found = _children(Path(folder or ".").expanduser(), keep, files)
    return [os.path.join(folder, name) for name in found if name.startswith(prefix)]


def _is_checkpoint(path: Path) -> bool:
    if path.is_file():
        return path.suffix in CHECKPOINT_SUFFIXES
    return any((path / name).is_file() for name in CHECKPOINT_FILES)


def _children(folder: Path, keep: Callable[[Path], bool], files: bool = False) -> list[str]:
    """Names in ``folder`` that ``keep`` accepts; entries that cannot be read are skipped
    (a Tab press must never fail)."""

    def wanted(path: Path) -> bool:
        try:
            return (files or path.is_dir()) and keep(path)
        except OSError:  # e.g. a directory the user may not enter
            return False

    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p.name for p in entries if not p.name.startswith(".") and wanted(p)]


COMPLETERS = {
    "dataset": complete_dataset,
    "checkpoint": complete_checkpoint,
    "init_from": complete_init_from,
}
