"""What every checkpoint format holds, in memory: ``Checkpoint`` (with the run's
``state.TrainState``).

Weights are kept under the model's own parameter names (nanoGPT's, see ``model.py``), with
the tied output layer ``lm_head.weight`` present and sharing its tensor with
``transformer.wte.weight``, exactly as ``GPT.state_dict()`` returns them. Each format's
reader and writer translate between that and its files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import CheckpointDamaged, CheckpointError
from ..state import TrainState

UNIFIED = "unified"
SEPARATED = "separated"
MODEL_ONLY = "model-only"
HF = "huggingface"
FORMATS = (UNIFIED, SEPARATED, MODEL_ONLY)  # what nanogpt writes as a checkpoint

WTE, LM_HEAD = "transformer.wte.weight", "lm_head.weight"
COMPILED_PREFIX = "_orig_mod."
# Causal-mask buffers that some writers (nanoGPT without flash attention, older
# transformers) store with the weights; they are not weights and the model rebuilds them.
_MASK_SUFFIXES = (".attn.bias", ".attn.masked_bias")


Loader = Callable[[], dict[str, Any]]


@dataclass
class Checkpoint:
    """A checkpoint: metadata at hand, weights and optimizer state loaded on demand.

    ``format`` is one of ``FORMATS`` or ``HF``; ``origin`` says who wrote it (``nanogpt``,
    ``nanoGPT`` for the original ``train.py``, or ``transformers``). ``tokenizer`` is the
    tokenizer's description (see ``data.tokenizer``), or None where the checkpoint does not
    say and nothing beside it told.
    """

    model_config: ModelConfig
    tokenizer: dict[str, Any] | None
    state: TrainState = field(default_factory=TrainState)
    dataset: str | None = None
    config: dict[str, Any] | None = None  # the TrainConfig used, as TrainConfig.to_dict()
    path: Path | None = None
    format: str | None = None
    origin: str = "nanogpt"
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what loading had to assume
    _weights: dict[str, torch.Tensor] | Loader | None = field(default=None, repr=False)
    _optimizer: dict[str, Any] | Loader | None = field(default=None, repr=False)

    @property
    def has_optimizer(self) -> bool:
        return self._optimizer is not None

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's state dict (``GPT.state_dict()`` names, tied weights shared)."""
        if callable(self._weights):
            self._weights = self._weights()
        if self._weights is None:
            raise CheckpointError(f"checkpoint {self.path} holds no weights")
        return self._weights

    def optimizer_state(self) -> dict[str, Any]:
        """``{"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}``."""
        if self._optimizer is None:
            why = (
                "a model-only checkpoint is for inference"
                if self.format in (MODEL_ONLY, HF)
                else "it was saved without one"
            )
            raise CheckpointError(
                f"{self.describe()} has no optimizer state ({why}), so training cannot resume "
                "from it; start a new run from its weights, or resume from a checkpoint saved "
                "with its optimizer state"
            )
        if callable(self._optimizer):
            self._optimizer = self._optimizer()
        return self._optimizer

    def describe(self) -> str:
        return f"{self.format} checkpoint {self.path}" if self.path else "checkpoint"


def canonical_weights(
    raw: Mapping[str, torch.Tensor], source: str | Path
) -> dict[str, torch.Tensor]:
    """A state dict as ``GPT.state_dict()`` names it.

    Strips the ``_orig_mod.`` prefix a compiled model leaves, drops causal-mask buffers, and
    restores whichever of the tied pair ``transformer.wte.weight`` / ``lm_head.weight`` the
    writer left out.
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in raw.items():
        while name.startswith(COMPILED_PREFIX):
            name = name[len(COMPILED_PREFIX) :]
        if name.endswith(_MASK_SUFFIXES):
            continue
        out[name] = tensor
    if WTE not in out and LM_HEAD in out:
        out[WTE] = out[LM_HEAD]
    if LM_HEAD not in out and WTE in out:
        out[LM_HEAD] = out[WTE]
    if WTE not in out:
        raise CheckpointError(f"{source} holds no token embedding ({WTE}); is it a GPT?")
    if out[LM_HEAD] is not out[WTE] and torch.equal(out[LM_HEAD], out[WTE]):
        out[LM_HEAD] = out[WTE]
    # Two different tensors are an untied model's (--no-tie-embeddings); load_weights
    # refuses them for a tied one.
    return out


def untied(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights without the tied duplicate ``lm_head.weight`` (for file formats that
    cannot store one tensor under two names); an untied output layer stays."""
    if LM_HEAD in weights and WTE in weights and not _shared(weights[LM_HEAD], weights[WTE]):
        return dict(weights)
    return {k: v for k, v in weights.items() if k != LM_HEAD}


def _shared(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` are one tensor (a tied pair), in memory or as values."""
    if a is b or (a.device.type != "meta" and a.data_ptr() == b.data_ptr()):
        return True
    return a.shape == b.shape and a.device == b.device and torch.equal(a, b)


def load_weights(ckpt: Checkpoint, model: nn.Module) -> None:
    """Copy the checkpoint's weights into ``model``, converting dtypes; shapes must match."""
    weights = ckpt.weights()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {ckpt.path} do not fit this model"
            + (f"; missing {', '.join(missing[:3])}" if missing else "")
            + (f"; unexpected {', '.join(unexpected[:3])}" if unexpected else "")
        )
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"weights in {ckpt.path} do not fit this model: {name} is "
                f"{tuple(tensor.shape)} in the checkpoint, {tuple(expected[name].shape)} here"
            )
    head, embedding = getattr(model, "lm_head", None), getattr(model, "transformer", None)
    tied = head is not None and embedding is not None and head.weight is embedding.wte.weight
    if tied and LM_HEAD in weights and not _shared(weights[LM_HEAD], weights[WTE]):
        raise CheckpointError(
            f"{ckpt.path} has an output layer that is not tied to the token embedding but "
            "this model ties them; build it with --no-tie-embeddings"
        )
    check_finite(weights, ckpt.path)
    model.load_state_dict(weights)


def check_finite(weights: Mapping[str, torch.Tensor], source: str | Path | None) -> None:
    """Refuse weights with a NaN or an infinity (what a diverged run saves): they would
    give NaN logits and fail far from the cause. One pass, no copy: a sum in float64 is
    finite exactly when every element is (no float32 sum can overflow it)."""
    for name, tensor in weights.items():
        floating = tensor.is_floating_point() and tensor.numel()
        if floating and not math.isfinite(tensor.sum(dtype=torch.float64).item()):
            raise CheckpointDamaged(
                f"checkpoint {source} holds non-finite weights (NaN or inf) in {name}; "
                "the run that saved it had diverged: use an earlier checkpoint, or train "
                "again (e.g. with a lower --learning-rate)"
            )


def weights_dtype(weights: Mapping[str, torch.Tensor]) -> str:
    """The weights' dtype name (``float32``), or a list of them if mixed."""
    names = sorted({str(t.dtype).removeprefix("torch.") for t in weights.values()})
    return "/".join(names)
