"""Checkpoints: what training saves and sampling, resuming and conversion load.

A checkpoint is a directory (by default the run's ``out_dir``) holding:

- ``model.safetensors``: the weights (no pickle);
- ``checkpoint.json``: model config, tokenizer, training state, RNG states, the config used;
- ``optimizer.pt``: optimizer and gradient-scaler state, read with ``weights_only=True``.

Each file is written under a temporary name and renamed into place, so a crash mid-save
never leaves a half-written file; every file records the iteration it belongs to, so a crash
between two renames is detected on load instead of resuming from a mixed state.
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
