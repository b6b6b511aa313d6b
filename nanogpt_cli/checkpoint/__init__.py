"""Checkpoints: what training saves, and what sampling, resuming and conversion load.

Three formats are written, and told apart on load by the files present:

- *separated* (the default): ``model.safetensors`` + ``optimizer.pt`` + ``checkpoint.json``;
- *model-only*: ``model.safetensors`` + ``checkpoint.json``, for inference and sharing;
- *unified*: one ``ckpt.pt`` in the original nanoGPT's layout, which nanoGPT's own scripts
  read, and which nanoGPT's ``train.py`` writes.

Hugging Face GPT-2 folders are read too, and written by ``convert_checkpoint``. Nothing is
unpickled beyond tensors and plain data (see ``safety``), and every save is atomic.
"""

from .convert import Conversion, checkpoint_info, convert_checkpoint, model_from_checkpoint
from .core import (
    FORMATS,
    HF,
    MODEL_ONLY,
    SEPARATED,
    UNIFIED,
    Checkpoint,
    TrainState,
    load_weights,
)
from .directory import CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE
from .formats import (
    GPT2_MODELS,
    checkpoint_target,
    locate,
    read_checkpoint,
    read_pretrained,
    save_checkpoint,
)
from .safety import load_plain_pickle, load_torch_file
from .unified import META_FILE, UNIFIED_FILE

__all__ = [
    "CONFIG_FILE",
    "FORMATS",
    "GPT2_MODELS",
    "HF",
    "META_FILE",
    "MODEL_FILE",
    "MODEL_ONLY",
    "OPTIMIZER_FILE",
    "SEPARATED",
    "UNIFIED",
    "UNIFIED_FILE",
    "Checkpoint",
    "Conversion",
    "TrainState",
    "checkpoint_info",
    "checkpoint_target",
    "convert_checkpoint",
    "load_plain_pickle",
    "load_torch_file",
    "load_weights",
    "locate",
    "model_from_checkpoint",
    "read_checkpoint",
    "read_pretrained",
    "save_checkpoint",
]
