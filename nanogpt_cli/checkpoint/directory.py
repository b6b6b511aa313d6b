"""The separated and model-only formats: a directory of safetensors weights and JSON.

- ``model.safetensors``: the weights (no pickle), the tied output layer stored once;
- ``checkpoint.json``: model config, tokenizer, training state, RNG states, the config used;
- ``optimizer.pt`` (separated only): optimizer and gradient-scaler state, tensors and plain
  data only, read with ``weights_only=True``.

Each file is written under a temporary name and flushed to disk before any is renamed into
place, so a crash mid-save either leaves the previous checkpoint untouched or is completed on
the next load; every file also records the iteration it belongs to, so files of different
saves are never mixed silently.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import CheckpointDamaged, CheckpointError, CheckpointMissing, first_line
from . import fields
from .core import MODEL_ONLY, SEPARATED, Checkpoint, TrainState, canonical_weights, untied
from .files import create_new, seal, write_failure
from .safety import load_torch_file

CONFIG_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
FORMAT = "nanogpt-checkpoint"
FORMAT_VERSION = 1
_FILES = (MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE)  # in the order they are committed


def write_directory(
    out_dir: str | Path,
    ckpt: Checkpoint,
    *,
    model_only: bool = False,
    dtype: torch.dtype | None = None,
) -> list[Path]:
    """Write ``ckpt`` into ``out_dir`` as separated (with optimizer) or model-only files.

    Every file is first written under a temporary name and flushed to disk, the JSON last:
    once ``checkpoint.json.tmp`` exists, the new checkpoint is complete. The files are then
    renamed into place, JSON last. A crash before that point leaves the previous checkpoint
    as it was; a crash during the renames is finished on the next load (see ``recover``).
    ``dtype`` converts floating-point weights (model-only exports).
    """

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out):
        recover(out)
        return _write_directory(out, ckpt, model_only, dtype)


def _write_directory(
    out: Path, ckpt: Checkpoint, model_only: bool, dtype: torch.dtype | None
) -> list[Path]:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    state = ckpt.state
    stamp = str(state.iter_num)
    with_optimizer = not model_only
    optimizer = ckpt.optimizer_state() if with_optimizer else None
    tensors = {
        name: (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous()
        for name, t in untied(ckpt.weights()).items()
    }
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": MODEL_ONLY if model_only else SEPARATED,
        "nanogpt_version": __version__,
        "model": asdict(ckpt.model_config),
        "tokenizer": ckpt.tokenizer,
        "dataset": ckpt.dataset,
        "train": {
            "iter_num": state.iter_num,
            # JSON has no infinity: a run that never evaluated has no best loss yet.
            "best_val_loss": None if math.isinf(state.best_val_loss) else state.best_val_loss,
            "tokens_seen": state.tokens_seen,
        },
        # A model-only checkpoint is for inference: nothing to continue, so no RNG states.
        "rng": {} if model_only else state.rng,
        "config": ckpt.config,
        "files": {"model": MODEL_FILE, "optimizer": OPTIMIZER_FILE if with_optimizer else None},
    }
    writing = out / MODEL_FILE
    try:
        # save_file writes a file of its own and renames it over the name it is given (so
        # never through a link there), with mode 0600: seal gives it the ordinary mode.
        _tmp(out, MODEL_FILE).unlink(missing_ok=True)
        save_file(tensors, str(_tmp(out, MODEL_FILE)), metadata={"format": "pt", "iter_num": stamp})
        seal(_tmp(out, MODEL_FILE))
        if optimizer is not None:
            writing = out / OPTIMIZER_FILE
            with create_new(_tmp(out, OPTIMIZER_FILE)) as f:
                torch.save({"iter_num": state.iter_num, **optimizer}, f)
            seal(_tmp(out, OPTIMIZER_FILE))
        writing = out / CONFIG_FILE
        with create_new(_tmp(out, CONFIG_FILE)) as f:
            f.write((json.dumps(meta, indent=1) + "\n").encode("utf-8"))
        seal(_tmp(out, CONFIG_FILE))
    except (OSError, RuntimeError, SafetensorError) as e:  # disk full, permissions
        why = write_failure(e, writing)  # before the temporaries go: the disk is still full
        for name in _FILES:
            _tmp(out, name).unlink(missing_ok=True)
        raise CheckpointError(
            f"could not save the checkpoint in {out}: {why}; the previous checkpoint is intact"
        ) from None
    _commit(out)
    if not with_optimizer:
        (out / OPTIMIZER_FILE).unlink(missing_ok=True)
    return [out / name for name in _FILES if (out / name).is_file()]


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder`` while a save or a read-and-recover runs.

    Without it, a reader (``nanogpt sample`` during training) could tidy away the temporary
    files of a save in progress. POSIX ``flock`` on the directory itself, so no lock file is
    left behind; elsewhere, or where the directory cannot be opened, no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _tmp(out: Path, name: str) -> Path:
    return out / (name + ".tmp")


def fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable (POSIX; a no-op elsewhere)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _commit(out: Path) -> None:
    """Rename the temporary files of a complete save into place, the JSON last."""
    for name in _FILES:
        if _tmp(out, name).exists():
            os.replace(_tmp(out, name), out / name)
    fsync_dir(out)


def recover(out: Path) -> None:
    """Finish or discard a save that a crash interrupted.

    A complete ``checkpoint.json.tmp`` means every new file was on disk before the renames
    began: finish them. Anything less means the renames never began: drop the temporaries.
    """
    json_tmp = _tmp(out, CONFIG_FILE)
    try:
        complete = json_tmp.exists() and isinstance(json.loads(json_tmp.read_text()), dict)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        complete = False
    if complete:
        _commit(out)
    else:
        for name in _FILES:
            _tmp(out, name).unlink(missing_ok=True)


def has_directory_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds (or a finished interrupted save would hold) this format."""
    return (path / CONFIG_FILE).is_file() or _tmp(path, CONFIG_FILE).is_file()


def read_directory(root: Path) -> Checkpoint:
    """Read a separated or model-only checkpoint directory and check its files agree."""
    with locked(root):
        if os.access(root, os.W_OK):
            recover(root)
        if not (root / CONFIG_FILE).exists():  # what a first save, killed, left: discarded
            raise CheckpointMissing(f"no checkpoint in {root} (an interrupted save was discarded)")
        return _read_directory(root)


def _read_directory(root: Path) -> Checkpoint:
    meta_path = root / CONFIG_FILE
    meta = fields.Fields(fields.read_json(meta_path), meta_path)
    if meta.raw("format", None) != FORMAT:
        raise CheckpointDamaged(
            f"{meta_path} is not a nanogpt checkpoint: its format is "
            f"{meta.raw('format', None)!r}, not {FORMAT!r}"
        )
    version = meta.integer("version", FORMAT_VERSION, low=1)
    if version > FORMAT_VERSION:
        raise CheckpointDamaged(
            f"{meta_path} is format version {version}, written by a newer nanogpt than this "
            f"one (which reads version {FORMAT_VERSION}); upgrade nanogpt"
        )
    model_config = fields.model_config(meta.raw("model"), meta_path)
    train = fields.Fields(meta.obj("train"), meta_path, "train")
    best = train.number("best_val_loss", None, infinite=True)
    state = TrainState(
        iter_num=train.integer("iter_num"),
        best_val_loss=math.inf if best is None else best,
        tokens_seen=train.integer("tokens_seen", 0),
        rng=meta.obj("rng", {}),
    )
    tokenizer = fields.tokenizer_field(meta.raw("tokenizer"), meta_path)
    files = fields.Fields(meta.obj("files", {}), meta_path, "files")
    listed = files.text("optimizer", None)
    dataset = meta.text("dataset", None)
    config = fields.run_config(meta.raw("config", None), meta_path)
    model_path = root / MODEL_FILE
    if not model_path.is_file():
        raise CheckpointDamaged(
            f"checkpoint {root} has no {MODEL_FILE} although {CONFIG_FILE} lists it; it is "
            "incomplete"
        )
    stamp, shapes = _model_header(model_path)
    if stamp is not None and stamp != str(state.iter_num):
        raise CheckpointDamaged(
            f"checkpoint {root} is inconsistent ({MODEL_FILE} is from iteration {stamp}, "
            f"{CONFIG_FILE} from {state.iter_num}); a save was interrupted"
        )
    model_config = fields.check_shapes(model_config, shapes, meta_path, model_path)
    optimizer_path = root / OPTIMIZER_FILE
    files_read = [model_path, meta_path] + ([optimizer_path] if listed else [])
    return Checkpoint(
        model_config=model_config,
        tokenizer=tokenizer,
        state=state,
        dataset=dataset,
        config=config,
        path=root,
        format=SEPARATED if listed else MODEL_ONLY,
        files=files_read,
        _weights=lambda: _read_weights(model_path, state.iter_num),
        _optimizer=(lambda: _read_optimizer(optimizer_path, state.iter_num)) if listed else None,
    )


def _model_header(path: Path) -> tuple[str | None, dict[str, list[int]]]:
    """The iteration ``path`` was saved at and its tensors' shapes, from the header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            stamp = (f.metadata() or {}).get("iter_num")
            return stamp, {name: f.get_slice(name).get_shape() for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as e:
        raise CheckpointDamaged(
            f"{path} is not a readable safetensors file ({first_line(e)}); the file is damaged "
            "or not a checkpoint"
        ) from None


def _read_weights(path: Path, iter_num: int) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            stamp = (f.metadata() or {}).get("iter_num")
            if stamp is not None and stamp != str(iter_num):
                raise CheckpointError(
                    f"{path} was replaced by a newer save (iteration {stamp}) while it was "
                    "being read; read the checkpoint again"
                )
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as e:
        raise CheckpointDamaged(
            f"{path} is not a readable safetensors file ({first_line(e)}); the file is damaged "
            "or not a checkpoint"
        ) from None
    return canonical_weights(tensors, path)


def _read_optimizer(path: Path, iter_num: int) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointDamaged(
            f"checkpoint {path.parent} has no {OPTIMIZER_FILE} although {CONFIG_FILE} lists it; "
            "it is incomplete"
        )
    try:
        state = load_torch_file(path, mmap=True)
    except CheckpointError as e:
        raise CheckpointDamaged(str(e)) from None
    if not isinstance(state, dict) or state.get("iter_num") != iter_num:
        found = state.get("iter_num") if isinstance(state, dict) else None
        raise CheckpointDamaged(
            f"checkpoint {path.parent} is inconsistent ({OPTIMIZER_FILE} is from iteration "
            f"{found}, {CONFIG_FILE} from {iter_num}); a save was interrupted"
        )
    optimizer, scaler = state.get("optimizer"), state.get("scaler") or {}
    if not isinstance(optimizer, dict) or not isinstance(scaler, dict):
        raise CheckpointDamaged(f"{path} holds no optimizer state; the file is damaged")
    return {"optimizer": optimizer, "scaler": scaler}
