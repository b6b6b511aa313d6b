"""Converting checkpoints between formats, checking conversions, describing checkpoints.

Behind ``nanogpt convert-checkpoint``; everything here works from Python as well.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..config.dtypes import dtype_name
from ..errors import CheckpointError
from ..progress import Progress, progress
from ..runtime import DTYPES
from .core import (
    FORMATS,
    HF,
    MODEL_ONLY,
    SEPARATED,
    UNIFIED,
    Checkpoint,
    load_weights,
    weights_dtype,
)
from .directory import MODEL_FILE, has_directory_checkpoint
from .fields import check_shapes
from .formats import checkpoint_target, read_checkpoint, save_checkpoint
from .hf import export_vocab_size, is_hf_folder, is_nanogpt_export, read_hf, write_hf
from .safety import load_plain_pickle
from .unified import META_FILE, NANOGPT_ACTIVATION, char_meta, nanogpt_reading

VERIFY_BATCH, VERIFY_TOKENS, VERIFY_SEED = 2, 64, 1234
NANOGPT_READER = "nanoGPT would (exact GELU)"  # how verify runs a unified export


@dataclass
class Conversion:
    """What a conversion read and wrote."""

    source: Checkpoint
    dst: Path
    format: str
    files: list[Path]
    notes: list[str] = field(default_factory=list)
    # With verify: the largest logit difference between the source and the target as its
    # reader computes it (``verified_as``: for a unified export, as nanoGPT's model.py would).
    max_abs_diff: float | None = None
    verified_as: str | None = None
    # With verify of a unified export: the file checked apart from the activation (nanoGPT's
    # reading against the source's weights under the exact GELU, and nanogpt's own reading
    # against the source); equals max_abs_diff or more when the activations agree.
    file_diff: float | None = None


def model_from_checkpoint(ckpt: Checkpoint, device: torch.device | str = "cpu") -> Any:
    """A ``GPT`` with the checkpoint's shape and weights, in float32, in eval mode."""
    from ..model import GPT

    # The shape asked for is the weights' (whoever built ``ckpt``): nothing larger is made.
    shapes = {name: tuple(t.shape) for name, t in ckpt.weights().items()}
    check_shapes(replace(ckpt.model_config), shapes, ckpt.describe(), ckpt.path or "weights")
    # Built on the meta device, then given memory: every weight comes from the checkpoint,
    # so the random initialisation (as slow as reading the weights) is skipped.
    with torch.device("meta"):
        model = GPT(ckpt.model_config)
    model.to_empty(device="cpu")
    if ckpt.model_config.tie_embeddings:
        model.transformer.wte.weight = model.lm_head.weight  # tied again (to_empty unties)
    load_weights(ckpt, model)
    return model.to(device).eval()


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    to: str,
    *,
    source_format: str | None = None,
    dtype: str | None = None,
    meta: str | Path | None = None,
    verify: bool = False,
    force: bool = False,
) -> Conversion:
    """Convert the checkpoint at ``src`` to format ``to`` (one of ``FORMATS`` or ``HF``) in
    ``dst``.

    ``source_format`` insists on the source's format (``unified-to-separated`` is for unified
    sources); ``HF`` also admits hub ids. ``dtype`` (``fp32``/``float32``, ``bf16``/``bfloat16``,
    ``fp16``/``float16``) applies to model-only exports. ``verify`` loads both sides and
    compares their logits on a fixed input; a unified export is run as nanoGPT's ``model.py``
    would run it (see ``verify_nanogpt_export``). Existing checkpoints at ``dst`` are
    replaced only with ``force``.
    """
    if to not in (*FORMATS, HF):
        raise CheckpointError(f"unknown target format {to!r}")
    if dtype is not None:
        dtype = dtype_name(dtype, auto=False)
    if dtype is not None and to != MODEL_ONLY:
        raise CheckpointError("--dtype applies to model-only exports only")
    with progress(f"convert to {to}", total=3 if verify else 2) as bar:
        bar.describe(f"read {src}")
        source = read_hf(src) if source_format == HF else read_checkpoint(src, meta=meta)
        bar.advance()
        result = _convert(source, src, dst, to, source_format, dtype, force, bar)
        if verify:
            bar.describe(f"verify {result.dst}")
            # nanoGPT's model.py cannot run a model with options GPT-2 lacks: nanogpt's own
            # reading of the file is checked instead (write_unified warned of it).
            if to == UNIFIED and not source.model_config.non_gpt2_options():
                result.max_abs_diff, result.file_diff = verify_nanogpt_export(source, result.dst)
                result.verified_as = NANOGPT_READER
            else:
                result.max_abs_diff = verify_conversion(source, result.dst, to)
            bar.advance()
    return result


def _convert(
    source: Checkpoint,
    src: str | Path,
    dst: str | Path,
    to: str,
    source_format: str | None,
    dtype: str | None,
    force: bool,
    bar: Progress,
) -> Conversion:
    """Check ``source`` and the destination, then write ``source`` there as ``to``."""
    if source_format is not None and source.format != source_format:
        raise CheckpointError(
            f"{src} is a {source.format} checkpoint, not {source_format}; "
            f"{_suggest(source.format, to)}"
        )
    if to in (SEPARATED, UNIFIED) and not source.has_optimizer:
        raise CheckpointError(
            f"{src} is a {source.format} checkpoint without optimizer state; a {to} "
            "checkpoint needs one (use to-model-only or to-hf for inference exports)"
        )
    target = (Path(dst).expanduser() if to == HF else checkpoint_target(dst, to)).resolve()
    _check_target(source, target, to, force)
    notes = list(source.notes)
    bar.describe(f"write {target}")
    if to == HF:
        notes += write_hf(target, source, overwrite=force)
        files = sorted(p for p in target.iterdir() if p.is_file())
    else:
        files = save_checkpoint(source, target, to, dtype=DTYPES[dtype] if dtype else None)
    bar.advance()
    return Conversion(source=source, dst=target, format=to, files=files, notes=notes)


def _suggest(found: str | None, to: str) -> str:
    if found == UNIFIED:
        return "use unified-to-separated" if to == SEPARATED else "use to-model-only or to-hf"
    if found == HF:
        return "use from-hf"
    if found == MODEL_ONLY:
        return "it has no optimizer state to convert; use to-model-only or to-hf"
    return "use separated-to-unified, to-model-only or to-hf"


def _check_target(source: Checkpoint, target: Path, to: str, force: bool) -> None:
    """Refuse, before anything is written, a destination that is the source or would
    delete it, that is not a folder where one is needed, or that holds a checkpoint (or
    another vocabulary's ``meta.pkl``) unless ``force``."""
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise CheckpointError(f"{parent} is a file; the destination must be under a folder")
        if parent.exists():
            break
    if source.path is not None:
        src = source.path
        if _same(target, src):
            raise CheckpointError(f"{target} is the source checkpoint; choose another destination")
        if to == HF and any(_same(target, parent) for parent in src.resolve().parents):
            raise CheckpointError(
                f"{target} holds the source checkpoint {src}; choose another destination"
            )
    if to == UNIFIED:
        if target.is_dir():
            raise CheckpointError(f"{target} is a folder; name a .pt file or a folder without one")
        occupied = target.exists()
        meta = char_meta(source.tokenizer)
        meta_path = target.parent / META_FILE
        if meta is not None and meta_path.exists() and not force and _meta_differs(meta_path, meta):
            raise CheckpointError(
                f"{meta_path} holds another vocabulary, which this export would replace; "
                "export into another folder or pass --force"
            )
    else:
        if target.exists() and not target.is_dir():
            raise CheckpointError(f"{target} is a file; the destination must be a folder")
        if to == HF:
            occupied = target.is_dir() and any(target.iterdir())
            if occupied and force and not is_nanogpt_export(target):
                raise CheckpointError(
                    f"{target} holds files other than an earlier `to-hf` export; --force only "
                    "replaces such an export. Choose a new or empty folder"
                )
        else:
            occupied = (
                has_directory_checkpoint(target)
                or (target / MODEL_FILE).exists()
                or is_hf_folder(target)
            )
    if occupied and not force:
        what = "is not empty" if to == HF else "already holds a checkpoint"
        raise CheckpointError(f"{target} {what}; pass --force to replace it")


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name the same file or folder (case-insensitive file systems too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet
        return a.resolve() == b.resolve()


def _meta_differs(path: Path, meta: dict[str, Any]) -> bool:
    try:
        return load_plain_pickle(path) != meta
    except CheckpointError:
        return True


def _verify_input(source: Checkpoint) -> torch.Tensor:
    """The fixed token ids both sides of a verification run on."""
    vocab = export_vocab_size(source)
    block = source.model_config.block_size
    generator = torch.Generator().manual_seed(VERIFY_SEED)
    return torch.randint(0, vocab, (VERIFY_BATCH, min(block, VERIFY_TOKENS)), generator=generator)


def _max_diff(a: torch.Tensor, b: torch.Tensor, vocab: int) -> float:
    return (a[..., :vocab].float() - b[..., :vocab].float()).abs().max().item()


def nanogpt_model(path: str | Path) -> Any:
    """The model nanoGPT's ``sample.py`` builds from the ``ckpt.pt`` at ``path``: nanogpt's
    ``GPT`` with nanoGPT's config keys and exact GELU (the computation of nanoGPT's
    ``model.py``), the weights loaded strictly, in eval mode."""
    from ..model import GPT

    cfg, state = nanogpt_reading(Path(path))
    try:
        model = GPT(cfg)
        model.load_state_dict(state, strict=True)
    except (AssertionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise CheckpointError(f"nanoGPT's model.py could not load {path}: {first}") from None
    return model.eval()


def verify_nanogpt_export(source: Checkpoint, target: Path) -> tuple[float, float]:
    """Check a unified export as nanoGPT's own scripts will read it.

    Returns the largest logit difference between the source model (its own activation) and
    the file run as nanoGPT's ``model.py`` runs it, which includes the GELU difference of a
    ``gelu_tanh`` model, and the largest difference that is the file's own: nanoGPT's reading
    against the source's weights under the exact GELU, and nanogpt's reading (which keeps
    the activation) against the source.
    """
    from ..model import GPT

    idx = _verify_input(source)
    vocab = export_vocab_size(source)
    with torch.no_grad():
        expected, _ = model_from_checkpoint(source)(idx)
        nanogpt, _ = nanogpt_model(target)(idx)
        ours, _ = model_from_checkpoint(read_checkpoint(target))(idx)
        if source.model_config.activation == NANOGPT_ACTIVATION:
            exact = expected
        else:
            model = GPT(replace(source.model_config, activation=NANOGPT_ACTIVATION))
            load_weights(source, model)
            exact, _ = model.eval()(idx)
    as_nanogpt = _max_diff(expected, nanogpt, vocab)
    file_diff = max(_max_diff(exact, nanogpt, vocab), _max_diff(expected, ours, vocab))
    return as_nanogpt, file_diff


def verify_conversion(source: Checkpoint, target: Path, to: str) -> float:
    """Largest absolute difference between the logits of both sides on a fixed input."""
    vocab = export_vocab_size(source)
    idx = _verify_input(source)
    with torch.no_grad():
        # Each side is computed by the code that owns its format: transformers for a
        # Hugging Face folder, nanogpt's model for everything else.
        if source.format == HF and source.path is not None:
            expected = _hf_logits(source.path, idx)
        else:
            expected, _ = model_from_checkpoint(source)(idx)
        if to == HF:
            got = _hf_logits(target, idx)
        else:
            got, _ = model_from_checkpoint(read_checkpoint(target))(idx)
    return _max_diff(expected, got, vocab)


def _hf_logits(folder: Path, idx: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own report says what was compared
    # GPT2LMHeadModel or LlamaForCausalLM, as the folder's config.json says.
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model(idx).logits


def checkpoint_info(path: str | Path, meta: str | Path | None = None) -> dict[str, Any]:
    """What ``convert-checkpoint info`` prints: format, size, config, training state; the
    keys are identifiers (``written_by``, ``best_val_loss``), as ``info --json`` shows them."""
    ckpt = read_checkpoint(path, meta=meta)
    weights = ckpt.weights()
    seen: set[int] = set()
    n_params = 0
    for t in weights.values():
        if id(t) not in seen:  # the tied output layer counts once
            seen.add(id(t))
            n_params += t.numel()
    best = ckpt.state.best_val_loss
    tokenizer = ckpt.tokenizer or {}
    return {
        "path": str(ckpt.path),
        "format": ckpt.format,
        "written_by": ckpt.origin,
        "parameters": n_params,
        "dtype": weights_dtype(weights),
        "model": asdict(ckpt.model_config),
        "tokenizer": _tokenizer_summary(tokenizer),
        "dataset": ckpt.dataset,
        "iteration": ckpt.state.iter_num,
        "best_val_loss": None if math.isinf(best) else best,
        "optimizer_state": ckpt.has_optimizer,
        "files": {str(p): p.stat().st_size for p in ckpt.files if p.is_file()},
        "notes": ckpt.notes,
    }


def _tokenizer_summary(tokenizer: dict[str, Any]) -> str | None:
    if not tokenizer:
        return None
    if tokenizer.get("kind") == "char":
        return f"characters ({len(tokenizer['chars'])})"
    if tokenizer.get("kind") == "tiktoken":
        return f"tiktoken {tokenizer.get('name')}"
    return str(tokenizer.get("kind"))
