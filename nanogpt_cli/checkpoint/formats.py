"""Finding, reading and writing a checkpoint in any format, told apart by its files.

| format | files | written by |
|---|---|---|
| separated | ``model.safetensors`` + ``optimizer.pt`` + ``checkpoint.json`` | nanogpt (default) |
| model-only | ``model.safetensors`` + ``checkpoint.json`` | nanogpt |
| unified | ``ckpt.pt`` (+ ``meta.pkl``) | nanogpt, the original nanoGPT |
| huggingface | ``config.json`` + ``model.safetensors`` / ``pytorch_model.bin`` | transformers |
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import CheckpointDamaged, CheckpointError, CheckpointMissing
from ..log import get_logger
from .core import FORMATS, HF, MODEL_ONLY, SEPARATED, UNIFIED, Checkpoint
from .directory import (
    CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    has_directory_checkpoint,
    read_directory,
    write_directory,
)
from .hf import HF_CONFIG, is_hf_folder, read_hf
from .unified import UNIFIED_FILE, UNIFIED_SUFFIXES, read_unified, unified_file, write_unified

logger = get_logger(__name__)

NEW_CHECKPOINT_HINT = "train one with `nanogpt train`"
_DIRECTORY_FILES = (CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE)
# Weights that only a checkpoint leaves in a folder.
_WEIGHT_FILES = (MODEL_FILE, OPTIMIZER_FILE, "pytorch_model.bin", "model.safetensors.index.json")


def locate(path: str | Path, hint: str = NEW_CHECKPOINT_HINT) -> tuple[str, Path]:
    """``(kind, where)`` of the checkpoint at ``path``: a directory or one of its files.

    ``kind`` is ``"directory"`` (separated or model-only), ``UNIFIED`` or ``HF``. Where a
    directory holds more than one, the most recently written wins, with a warning.
    """
    p = Path(path).expanduser()
    if p.is_file():
        if p.name in _DIRECTORY_FILES:
            return "directory", p.parent
        if p.name == HF_CONFIG:
            return HF, p.parent
        if p.suffix in UNIFIED_SUFFIXES:
            return UNIFIED, p
        raise CheckpointError(f"{p} is not a checkpoint file (expected a .pt file or a folder)")
    if not p.is_dir():
        raise CheckpointMissing(f"no checkpoint in {p} ({p} does not exist); {hint}")
    found: list[tuple[float, str, Path]] = []
    if has_directory_checkpoint(p):
        found.append((_mtime(p / CONFIG_FILE), "directory", p))
    if (p / UNIFIED_FILE).is_file():
        found.append((_mtime(p / UNIFIED_FILE), UNIFIED, p / UNIFIED_FILE))
    if is_hf_folder(p):
        found.append((_mtime(p / HF_CONFIG), HF, p))
    if not found:
        _refuse_remains(p)
        raise CheckpointMissing(
            f"no checkpoint in {p} (looked for {CONFIG_FILE}, {UNIFIED_FILE} and a Hugging Face "
            f"{HF_CONFIG}); {hint}"
        )
    found.sort(key=lambda f: f[0], reverse=True)
    if len(found) > 1:
        logger.warning(
            f"{p} holds more than one checkpoint ({', '.join(_name(k) for _, k, _ in found)}); "
            f"using the newest, {_name(found[0][1])}. Pass a file to choose another."
        )
    return found[0][1], found[0][2]


def _refuse_remains(p: Path) -> None:
    """A folder with a checkpoint's weights but nothing that describes them holds a damaged
    checkpoint, not none: say so, so that nothing takes it for an empty folder."""
    remains = [name for name in _WEIGHT_FILES if (p / name).exists()]
    if not remains:
        return
    if (p / HF_CONFIG).exists():
        raise CheckpointDamaged(
            f"{p / HF_CONFIG} is not a readable Hugging Face GPT-2 config (no JSON object with "
            f"model_type 'gpt2'), so the weights beside it ({', '.join(remains)}) cannot be read"
        )
    raise CheckpointDamaged(
        f"{p} holds {', '.join(remains)} but no {CONFIG_FILE}: an incomplete or damaged checkpoint"
    )


def _name(kind: str) -> str:
    return {"directory": CONFIG_FILE, UNIFIED: UNIFIED_FILE, HF: HF_CONFIG}[kind]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # an interrupted save's temporary, about to be finished
        return os.path.getmtime(path.with_name(path.name + ".tmp"))


def read_checkpoint(
    path: str | Path, hint: str = NEW_CHECKPOINT_HINT, meta: str | Path | None = None
) -> Checkpoint:
    """Read the checkpoint at ``path``, whatever its format; weights load on demand.

    ``meta`` is a nanoGPT ``meta.pkl`` with the character vocabulary, for a ``ckpt.pt`` that
    has none beside it. ``hint`` ends the error when there is no checkpoint: what to do.
    """
    kind, where = locate(path, hint)
    try:
        if kind == UNIFIED:
            ckpt = read_unified(where, meta)
        elif kind == HF:
            ckpt = read_hf(where)
        else:
            ckpt = read_directory(where)
    except CheckpointDamaged:
        raise
    except CheckpointMissing:
        _refuse_remains(where)
        raise
    except CheckpointError as e:  # found, but it cannot be read: never "no checkpoint"
        raise CheckpointDamaged(str(e)) from None
    for note in ckpt.notes:
        logger.info(f"{where}: {note}")
    return ckpt


# The released GPT-2 sizes, as ``--init-from`` names them, and their Hugging Face hub ids.
GPT2_MODELS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}


def read_pretrained(source: str | Path, meta: str | Path | None = None) -> Checkpoint:
    """Weights to start from: a GPT-2 size (``gpt2`` ... ``gpt2-xl``, fetched from the hub
    into its cache, or read from the cache offline) or a checkpoint / Hugging Face folder
    path. A path that exists wins over a size of the same name."""
    name = str(source)
    if name in GPT2_MODELS and not Path(name).expanduser().exists():
        return read_hf(GPT2_MODELS[name])
    return read_checkpoint(source, meta=meta)


def save_checkpoint(
    ckpt: Checkpoint, dst: str | Path, fmt: str = SEPARATED, *, dtype: torch.dtype | None = None
) -> list[Path]:
    """Write ``ckpt`` to ``dst`` in format ``fmt``; returns the files written.

    ``dst`` is a directory; for the unified format it may also name the ``.pt`` file.
    ``dtype`` converts the weights (model-only only: the other formats continue training,
    which needs the weights as they were).
    """
    if fmt not in FORMATS:
        raise CheckpointError(f"unknown checkpoint format {fmt!r}; use {', '.join(FORMATS)}")
    if dtype is not None and fmt != MODEL_ONLY:
        raise CheckpointError("only model-only checkpoints can change the weights' dtype")
    if fmt == UNIFIED:
        return write_unified(dst, ckpt)
    return write_directory(dst, ckpt, model_only=fmt == MODEL_ONLY, dtype=dtype)


def checkpoint_target(dst: str | Path, fmt: str) -> Path:
    """The file or directory a save of format ``fmt`` to ``dst`` creates."""
    return unified_file(dst) if fmt == UNIFIED else Path(dst).expanduser()
