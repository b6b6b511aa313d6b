"""Checkpoints: what training saves and sampling, resuming and conversion load.

A checkpoint is a directory (by default the run's ``out_dir``) holding:

- ``model.safetensors``: the weights (no pickle);
- ``checkpoint.json``: model config, tokenizer, training state, RNG states, the config used;
- ``optimizer.pt``: optimizer and gradient-scaler state, read with ``weights_only=True``.

Each file is written under a temporary name and flushed to disk before any is renamed into
place, so a crash mid-save either leaves the previous checkpoint untouched or is completed on
the next load; every file also records the iteration it belongs to, so files of different
saves are never mixed silently.
"""

from .io import (
    CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    Checkpoint,
    TrainState,
    find_checkpoint,
    load_model,
    load_optimizer_state,
    read_checkpoint,
    save_checkpoint,
)

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "Checkpoint",
    "TrainState",
    "find_checkpoint",
    "load_model",
    "load_optimizer_state",
    "read_checkpoint",
    "save_checkpoint",
]
