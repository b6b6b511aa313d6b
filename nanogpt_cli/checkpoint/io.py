"""Saving and loading nanogpt's checkpoint directory (see the package docstring)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..config import ModelConfig
from ..errors import CheckpointError

CONFIG_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
FORMAT = "nanogpt-checkpoint"
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """Where training stands: enough to continue as if it had never stopped."""

    iter_num: int = 0
    best_val_loss: float = math.inf
    tokens_seen: int = 0
    rng: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """A checkpoint's metadata; weights and optimizer state are loaded on demand."""

    path: Path
    model_config: ModelConfig
    tokenizer: dict[str, Any]
    state: TrainState
    dataset: str | None = None
    config: dict[str, Any] | None = None
    has_optimizer: bool = False


def save_checkpoint(
    out_dir: str | Path,
    model: nn.Module,
    model_config: ModelConfig,
    tokenizer: dict[str, Any],
    state: TrainState,
    *,
    optimizer_state: dict[str, Any] | None = None,
    dataset: str | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint files into ``out_dir``; returns the directory.

    Every file is first written under a temporary name and flushed to disk, the JSON last:
    once ``checkpoint.json.tmp`` exists, the new checkpoint is complete. The files are then
    renamed into place, JSON last. A crash before that point leaves the previous checkpoint
    as it was; a crash during the renames is finished on the next load (see ``_recover``).
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _recover(out)
    stamp = str(state.iter_num)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "nanogpt_version": __version__,
        "model": dataclasses.asdict(model_config),
        "tokenizer": tokenizer,
        "dataset": dataset,
        "train": {
            "iter_num": state.iter_num,
            # JSON has no infinity: a run that never evaluated has no best loss yet.
            "best_val_loss": None if math.isinf(state.best_val_loss) else state.best_val_loss,
            "tokens_seen": state.tokens_seen,
        },
        "rng": state.rng,
        "config": config,
        "files": {"model": MODEL_FILE, "optimizer": OPTIMIZER_FILE if optimizer_state else None},
    }
    try:
        save_model(model, str(_tmp(out, MODEL_FILE)), metadata={"format": "pt", "iter_num": stamp})
        _fsync(_tmp(out, MODEL_FILE))
        if optimizer_state is not None:
            torch.save({"iter_num": state.iter_num, **optimizer_state}, _tmp(out, OPTIMIZER_FILE))
            _fsync(_tmp(out, OPTIMIZER_FILE))
        with open(_tmp(out, CONFIG_FILE), "w", encoding="utf-8") as f:
            f.write(json.dumps(meta, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError, SafetensorError) as e:  # disk full, permissions
        for name in _FILES:
            _tmp(out, name).unlink(missing_ok=True)
        raise CheckpointError(
            f"could not save the checkpoint in {out}: {e}; the previous checkpoint is intact"
        ) from None
    _commit(out)
    if optimizer_state is None:
        (out / OPTIMIZER_FILE).unlink(missing_ok=True)
    return out


_FILES = (MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE)  # in the order they are committed


def _tmp(out: Path, name: str) -> Path:
    return out / (name + ".tmp")


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _commit(out: Path) -> None:
    """Rename the temporary files of a complete save into place, the JSON last."""
    for name in _FILES:
        if _tmp(out, name).exists():
            os.replace(_tmp(out, name), out / name)
    if hasattr(os, "O_DIRECTORY"):  # make the renames durable (POSIX)
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _recover(out: Path) -> None:
    """Finish or discard a save that a crash interrupted.

    A complete ``checkpoint.json.tmp`` means every new file was on disk before the renames
    began: finish them. Anything less means the renames never began: drop the temporaries.
    """
    json_tmp = _tmp(out, CONFIG_FILE)
    try:
        complete = json_tmp.exists() and isinstance(json.loads(json_tmp.read_text()), dict)
    except (OSError, UnicodeDecodeError, ValueError):
        complete = False
    if complete:
        _commit(out)
    else:
        for name in _FILES:
            _tmp(out, name).unlink(missing_ok=True)


NEW_CHECKPOINT_HINT = "train one with `nanogpt train`"


def find_checkpoint(path: str | Path, hint: str = NEW_CHECKPOINT_HINT) -> Path:
    """The checkpoint directory for ``path``: the directory itself or one of its files.

    ``hint`` ends the error message when there is none: what the user should do instead.
    """
    p = Path(path).expanduser()
    if p.is_file() and p.name in _FILES:
        p = p.parent
    if p.is_dir() and os.access(p, os.W_OK):
        _recover(p)
    if not (p / CONFIG_FILE).is_file():
        where = f"{p} does not exist" if not p.exists() else f"looked for {p / CONFIG_FILE}"
        raise CheckpointError(f"no checkpoint in {p} ({where}); {hint}")
    return p


def read_checkpoint(path: str | Path, hint: str = NEW_CHECKPOINT_HINT) -> Checkpoint:
    """Read a checkpoint's metadata and check that its files belong together."""
    root = find_checkpoint(path, hint)
    meta_path = root / CONFIG_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, not {FORMAT!r}")
        model_config = ModelConfig(**meta["model"])
        train = meta["train"]
        best = train.get("best_val_loss")
        state = TrainState(
            iter_num=int(train["iter_num"]),
            best_val_loss=math.inf if best is None else float(best),
            tokens_seen=int(train.get("tokens_seen", 0)),
            rng=meta.get("rng") or {},
        )
        tokenizer = meta["tokenizer"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta_path} is not a readable nanogpt checkpoint: {e}") from None
    if not (root / MODEL_FILE).is_file():
        raise CheckpointError(f"checkpoint {root} has no {MODEL_FILE}; it is incomplete")
    stamp = _model_stamp(root / MODEL_FILE)
    if stamp is not None and stamp != str(state.iter_num):
        raise CheckpointError(
            f"checkpoint {root} is inconsistent ({MODEL_FILE} is from iteration {stamp}, "
            f"{CONFIG_FILE} from {state.iter_num}); a save was interrupted"
        )
    return Checkpoint(
        path=root,
        model_config=model_config,
        tokenizer=tokenizer,
        state=state,
        dataset=meta.get("dataset"),
        config=meta.get("config"),
        has_optimizer=bool((meta.get("files") or {}).get("optimizer"))
        and (root / OPTIMIZER_FILE).is_file(),
    )


def _model_stamp(path: Path) -> str | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("iter_num")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def load_model(ckpt: Checkpoint, model: nn.Module, device: torch.device | str = "cpu") -> None:
    """Copy the checkpoint's weights into ``model`` (same shape, checked)."""
    from safetensors.torch import load_model as st_load_model

    try:
        missing, unexpected = st_load_model(
            model, str(ckpt.path / MODEL_FILE), strict=False, device=str(device)
        )
    except RuntimeError as e:  # shape mismatch
        raise CheckpointError(
            f"weights in {ckpt.path} do not fit this model: {str(e).splitlines()[-1].strip()}"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {ckpt.path} do not fit this model "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )


def load_optimizer_state(ckpt: Checkpoint) -> dict[str, Any]:
    """The optimizer and scaler states saved with the checkpoint."""
    path = ckpt.path / OPTIMIZER_FILE
    if not ckpt.has_optimizer:
        raise CheckpointError(
            f"checkpoint {ckpt.path} has no optimizer state, so training cannot resume from it"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or truncated file
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if state.get("iter_num") != ckpt.state.iter_num:
        raise CheckpointError(
            f"checkpoint {ckpt.path} is inconsistent ({OPTIMIZER_FILE} is from iteration "
            f"{state.get('iter_num')}, {CONFIG_FILE} from {ckpt.state.iter_num}); "
            "a save was interrupted"
        )
    return state
