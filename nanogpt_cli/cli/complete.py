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
    folder, prefix = os.path.split(incomplete)
    base = Path(folder or ".").expanduser()
    found = _children(base, _is_checkpoint, files=True)
    return [os.path.join(folder, name) for name in found if name.startswith(prefix)]


def complete_init_from(incomplete: str) -> list[str]:
    """GPT-2 sizes, then checkpoints."""
    sizes = [size for size in GPT2_SIZES if size.startswith(incomplete)]
    return sizes + complete_checkpoint(incomplete)


def complete_run(incomplete: str) -> list[str]:
    """Run directories: those with a metrics.jsonl."""
    folder, prefix = os.path.split(incomplete)
    base = Path(folder or ".").expanduser()
    found = _children(base, lambda p: (p / "metrics.jsonl").is_file())
    return [os.path.join(folder, name) for name in found if name.startswith(prefix)]


def _is_checkpoint(path: Path) -> bool:
    if path.is_file():
        return path.suffix in CHECKPOINT_SUFFIXES
    return any((path / name).is_file() for name in CHECKPOINT_FILES)


def _children(folder: Path, keep: Callable[[Path], bool], files: bool = False) -> list[str]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p.name for p in entries if (files or p.is_dir()) and not p.name.startswith(".") and keep(p)
    ]


COMPLETERS = {
    "dataset": complete_dataset,
    "checkpoint": complete_checkpoint,
    "init_from": complete_init_from,
}
