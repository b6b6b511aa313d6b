"""Hugging Face model folders: what a folder holds (``config.json``'s ``model_type``), where a
hub id's folder is, its weights (safetensors, sharded or not, or ``pytorch_model.bin`` read
safely), and the model-only checkpoint made of them. ``checkpoint.hf`` (GPT-2) and
``checkpoint.llama`` read the architectures they know from these.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import CheckpointDamaged, CheckpointError, first_line
from . import fields
from .core import HF, Checkpoint, TrainState
from .safety import load_torch_file

HF_CONFIG = "config.json"
MODEL_TYPES = ("gpt2", "llama")  # the transformers architectures read and written
GPT2_VOCAB = 50257


def model_type(path: Path) -> str | None:
    """The ``model_type`` of the Hugging Face config in folder ``path``; None without one."""
    config = path / HF_CONFIG
    if not config.is_file():
        return None
    try:
        found = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) else None


def is_hf_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding a Hugging Face GPT-2 or Llama model."""
    return model_type(path) in MODEL_TYPES


def resolve_hf_source(src: str | Path) -> Path:
    """A local folder for ``src``: the folder itself, or a hub id downloaded to the cache."""
    path = Path(src).expanduser()
    if path.exists():
        if not is_hf_folder(path):
            raise CheckpointError(
                f"{path} is not a Hugging Face GPT-2 or Llama folder (no config.json with "
                "model_type 'gpt2' or 'llama')"
            )
        return path
    name = str(src)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise CheckpointError(f"{src} does not exist")
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(name, allow_patterns=["*.json", "*.txt", "*.safetensors"]))
        if not list(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(name, allow_patterns=["pytorch_model.bin"]))
    except Exception as e:  # network, unknown repo, authentication: all one message
        raise CheckpointError(
            f"{src} is not a local folder and could not be fetched from the Hugging Face hub "
            f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
            "download it elsewhere and pass its folder"
        ) from None
    if not is_hf_folder(folder):
        raise CheckpointError(
            f"hub model {src} is not a GPT-2 or Llama model (model_type is neither)"
        )
    return folder


def raw_weights(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return _safetensors(folder / "model.safetensors")
    if index.is_file():
        weight_map = fields.Fields(fields.read_json(index), index).obj("weight_map")
        shards = set(weight_map.values())
        if not all(isinstance(s, str) and s == Path(s).name for s in shards):
            raise fields.invalid(index, "weight_map", "must name files in its own folder")
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(shards):
            out.update(_safetensors(folder / shard))
        return out
    if (folder / "pytorch_model.bin").is_file():
        state = load_torch_file(folder / "pytorch_model.bin")
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise CheckpointDamaged(
                f"{folder / 'pytorch_model.bin'} is not a state dict (names to tensors)"
            )
        return state
    raise CheckpointDamaged(f"{folder} has no model.safetensors or pytorch_model.bin")


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointDamaged(
            f"{path} is not a readable safetensors file ({first_line(e)}); the file is damaged "
            "or not a checkpoint"
        ) from None


def hf_checkpoint(
    folder: Path,
    model_config: ModelConfig,
    weights: dict[str, torch.Tensor],
    tokenizer: dict[str, Any] | None,
    dataset: str | None,
    iter_num: int,
) -> Checkpoint:
    notes: list[str] = []
    if tokenizer is None and model_config.vocab_size == GPT2_VOCAB:
        tokenizer = {"kind": "tiktoken", "name": "gpt2"}
        notes.append("vocabulary of 50257: taken to be GPT-2's BPE")
    elif tokenizer is None:
        notes.append("no nanogpt tokenizer recorded: sampling will need one")
    return Checkpoint(
        model_config=model_config,
        tokenizer=tokenizer,
        state=TrainState(iter_num=iter_num),
        dataset=dataset,
        path=folder,
        format=HF,
        origin="transformers",
        files=sorted(p for p in folder.iterdir() if p.is_file()),
        notes=notes,
        _weights=weights,
    )
