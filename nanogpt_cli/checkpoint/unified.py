"""The unified format: one ``ckpt.pt`` in the original nanoGPT's layout.

nanoGPT's ``train.py`` saves ``{"model", "optimizer", "model_args", "iter_num",
"best_val_loss", "config"}`` with ``torch.save``; its ``sample.py`` and
``train.py --init_from=resume`` read exactly those keys. nanogpt writes the same keys, so the
file works there, plus one more, ``"nanogpt"``, with what nanoGPT's layout has no room for
(activation, tokenizer, RNG and loader states, gradient-scaler state, the full config). Only
plain data goes in it, so the file loads with ``torch.load(weights_only=True)``.

Reading accepts what the original writes: weights under the ``_orig_mod.`` prefix of a
compiled model, ``best_val_loss`` as a tensor, ``model_args`` without ``bias`` or
``dropout``, and the character vocabulary in a ``meta.pkl`` (read without unpickling code).

nanoGPT's ``model.py`` always computes the exact GELU; a model with another activation is
still written (nanogpt reads its activation back from ``"nanogpt"``), with one warning that
nanoGPT's own scripts compute slightly different logits from it (``activation_warning``).
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .. import __version__
from ..config import GROUP_TITLES, ModelConfig, option_specs
from ..errors import CheckpointDamaged, CheckpointError
from ..log import get_logger
from . import fields
from .core import COMPILED_PREFIX, UNIFIED, Checkpoint, TrainState, canonical_weights
from .directory import fsync_dir, locked
from .fields import shown
from .files import create_new, seal, write_failure
from .safety import load_plain_pickle, load_torch_file

UNIFIED_FILE = "ckpt.pt"  # the name nanoGPT reads from its out_dir
META_FILE = "meta.pkl"
UNIFIED_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")  # a file of these names is one checkpoint
FORMAT = "nanogpt-unified"
FORMAT_VERSION = 1
NANOGPT_KEYS = ("model", "optimizer", "model_args", "iter_num", "best_val_loss", "config")
_MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")
# Options that describe the machine or the invocation, not the run: not taken from a
# foreign config.
_NOT_INHERITED = {"out_dir", "resume", "eval_only", "device", "dtype", "compile"}
# nanoGPT's GPTConfig: its fields and defaults (``GPTConfig(**model_args)`` in its scripts).
_GPT_CONFIG_DEFAULTS: dict[str, Any] = {
    "block_size": 1024,
    "vocab_size": 50304,
    "n_layer": 12,
    "n_head": 12,
    "n_embd": 768,
    "dropout": 0.0,
    "bias": True,
}
NANOGPT_ACTIVATION = "gelu"  # nanoGPT's MLP: nn.GELU(), the exact erf form
_warned: set[Path] = set()  # unified files whose activation warning was given

logger = get_logger(__name__)


def unified_file(path: str | Path) -> Path:
    """Where a unified checkpoint for ``path`` lives: the ``.pt`` file itself, or
    ``ckpt.pt`` inside the directory ``path``."""
    p = Path(path).expanduser()
    return p if p.suffix in UNIFIED_SUFFIXES else p / UNIFIED_FILE


def write_unified(path: str | Path, ckpt: Checkpoint) -> list[Path]:
    """Write ``ckpt`` as one ``ckpt.pt`` (plus ``meta.pkl`` for a character vocabulary).

    The file is written under a temporary name in the same directory, flushed, and renamed
    over the old one, so an interrupted save leaves the previous file intact.
    """
    target = unified_file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    cfg, state = ckpt.model_config, ckpt.state
    warn_activation(cfg, target)
    optimizer = ckpt.optimizer_state()
    payload = {
        "model": ckpt.weights(),  # the tied pair shares one tensor: stored once
        "optimizer": optimizer["optimizer"],
        "model_args": {name: getattr(cfg, name) for name in _MODEL_ARGS},
        "iter_num": state.iter_num,
        "best_val_loss": state.best_val_loss,
        "config": _nanogpt_config(ckpt),
        "nanogpt": {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "nanogpt_version": __version__,
            "model": asdict(cfg),
            "tokenizer": ckpt.tokenizer,
            "dataset": ckpt.dataset,
            "tokens_seen": state.tokens_seen,
            "rng": state.rng,
            "scaler": optimizer.get("scaler") or {},
            "config": ckpt.config,
        },
    }
    written = [target]
    try:
        with locked(target.parent):
            _atomic_write(target, lambda f: torch.save(payload, f))
            meta = char_meta(ckpt.tokenizer)
            if meta is not None:
                meta_path = target.parent / META_FILE
                _atomic_write(meta_path, lambda f: f.write(pickle.dumps(meta)))
                written.append(meta_path)
    except (OSError, RuntimeError) as e:
        raise CheckpointError(
            f"could not save {target}: {e}; the previous checkpoint is intact"
        ) from None
    except _WriteFailed as e:
        raise CheckpointError(
            f"could not save {target}: {e}; the previous checkpoint is intact"
        ) from None
    return written


def activation_warning(cfg: ModelConfig) -> str | None:
    """What a model with ``cfg`` loses in nanoGPT's own scripts, in one line; None when
    nanoGPT's ``model.py`` computes the same logits (the exact GELU)."""
    departures = cfg.non_gpt2_options()
    if departures:
        return (
            f"the model uses {departures[0]}, which nanoGPT's model.py does not have: "
            "nanoGPT's own scripts cannot load this ckpt.pt; nanogpt reads it back in full"
        )
    if cfg.activation == NANOGPT_ACTIVATION:
        return None
    return (
        f"the model uses activation {cfg.activation!r} (the tanh-approximate GELU) but "
        f"nanoGPT's model.py always uses the exact GELU ({NANOGPT_ACTIVATION!r}), so nanoGPT's "
        "scripts compute slightly different logits from this ckpt.pt (of the order of 1e-3); "
        "nanogpt's own loader keeps the activation. Train with --activation gelu for "
        "identical logits in nanoGPT"
    )


def warn_activation(cfg: ModelConfig, target: Path) -> None:
    """Log ``activation_warning`` once per file and process (training saves the same
    ``ckpt.pt`` at every evaluation)."""
    message = activation_warning(cfg)
    key = target.resolve()
    if message is not None and key not in _warned:
        _warned.add(key)
        logger.warning(f"{target}: {message}")


def nanogpt_reading(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The model config and state dict nanoGPT's ``sample.py`` builds from ``ckpt.pt``.

    ``GPTConfig(**model_args)``, with nanoGPT's defaults for missing keys and its exact GELU
    (the ``"nanogpt"`` entry is ignored, as nanoGPT ignores it), and the weights with the
    ``_orig_mod.`` prefix stripped, for a strict ``load_state_dict``.
    """
    payload = load_torch_file(path)
    args = payload.get("model_args") if isinstance(payload, dict) else None
    if not isinstance(args, dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{path} has no model and model_args; nanoGPT could not load it")
    unknown = sorted(set(map(str, args)) - set(_GPT_CONFIG_DEFAULTS))
    if unknown:
        raise CheckpointError(
            f"{path}: model_args has keys nanoGPT's GPTConfig does not take: {', '.join(unknown)}"
        )
    values = {**_GPT_CONFIG_DEFAULTS, **{k: _plain(v) for k, v in args.items()}}
    cfg = fields.model_config(
        {**values, "activation": NANOGPT_ACTIVATION}, path, "model_args", ignore_unknown=True
    )
    state = {
        (k[len(COMPILED_PREFIX) :] if k.startswith(COMPILED_PREFIX) else k): v
        for k, v in payload["model"].items()
    }
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    fields.check_shapes(cfg, shapes, path, path)  # before nanoGPT's model is built
    return cfg, state


class _WriteFailed(Exception):
    """A write that failed, its reason in words (see ``files.write_failure``)."""


def _atomic_write(target: Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write`` into a new temporary beside ``target`` (never through a link), flushed,
    then renamed over ``target``."""
    tmp = target.with_name(target.name + ".tmp")
    try:
        try:
            with create_new(tmp) as f:
                write(f)
            seal(tmp)
        except (OSError, RuntimeError) as e:
            raise _WriteFailed(write_failure(e, target)) from None  # while the disk is full
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


def char_meta(tokenizer: dict[str, Any] | None) -> dict[str, Any] | None:
    """nanoGPT's ``meta.pkl`` contents for a character tokenizer, else None."""
    if not tokenizer or tokenizer.get("kind") != "char":
        return None
    chars = list(tokenizer["chars"])
    return {
        "vocab_size": len(chars),
        "itos": dict(enumerate(chars)),
        "stoi": {ch: i for i, ch in enumerate(chars)},
    }


def _nanogpt_config(ckpt: Checkpoint) -> dict[str, Any]:
    """The flat ``config`` dict nanoGPT keeps: option names are the same as nanoGPT's.

    The dataset is spelled as nanoGPT's data folder (``shakespeare_char``), where its
    ``sample.py`` looks for ``meta.pkl``.
    """
    flat: dict[str, Any] = {}
    for group in (ckpt.config or {}).values():
        if isinstance(group, dict):
            flat.update(group)
    dataset = ckpt.dataset or flat.get("dataset")
    if dataset:
        flat["dataset"] = nanogpt_dataset_name(dataset)
    else:
        flat.pop("dataset", None)
    return flat


def nanogpt_dataset_name(name: str) -> str:
    return name.replace("-", "_") if "/" not in name and os.sep not in name else name


def _our_dataset_name(name: str) -> str:
    return name.replace("_", "-") if "/" not in name and os.sep not in name else name


def _nested_config(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A foreign flat config as ``TrainConfig.to_dict()`` groups, known options only."""
    nested: dict[str, dict[str, Any]] = {group: {} for group in GROUP_TITLES}
    for spec in option_specs():
        if spec.name in flat and spec.name not in _NOT_INHERITED:
            value = flat[spec.name]
            if isinstance(value, torch.Tensor):
                value = value.item()
            nested[spec.group][spec.name] = value
    if "dataset" in nested["data"]:
        nested["data"]["dataset"] = _our_dataset_name(str(nested["data"]["dataset"]))
    return nested


def read_unified(path: Path, meta: str | Path | None = None) -> Checkpoint:
    """Read a unified ``ckpt.pt``, written by nanogpt or by the original nanoGPT."""
    with locked(path.parent):
        # What a save killed mid-write left: the previous file is intact beside it.
        if os.access(path.parent, os.W_OK):
            for name in (path.name, META_FILE):
                path.with_name(name + ".tmp").unlink(missing_ok=True)
        # Memory-mapped: the tensors stay readable even if a new save replaces the file.
        payload = load_torch_file(path, mmap=True)
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        keys = ", ".join(sorted(map(str, payload))[:6]) if isinstance(payload, dict) else ""
        raise CheckpointDamaged(
            f"{path} is not a nanoGPT checkpoint (expected the keys {', '.join(NANOGPT_KEYS)}"
            + (f"; found {keys}" if keys else "")
            + ")"
        )
    raw = payload["model"]
    for name, tensor in raw.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise fields.invalid(path, f"model[{name!r}]", f"must be a tensor, not {shown(tensor)}")
    shapes = {name: tuple(tensor.shape) for name, tensor in raw.items()}
    ours = payload.get("nanogpt")
    notes: list[str] = []
    if isinstance(ours, dict) and ours.get("format") == FORMAT:
        extra = fields.Fields(ours, path, "nanogpt")
        model_config = fields.model_config(
            extra.raw("model"), path, "nanogpt.model", ignore_unknown=True
        )
        model_config = fields.check_shapes(model_config, shapes, path, path)
        tokenizer = fields.tokenizer_field(extra.raw("tokenizer", None), path, "nanogpt.tokenizer")
        dataset = extra.text("dataset", None)
        config = fields.run_config(extra.raw("config", None), path, "nanogpt.config")
        origin = "nanogpt"
        tokens_seen = extra.integer("tokens_seen", 0)
        rng = extra.obj("rng", {})
        scaler = extra.obj("scaler", {})
    else:
        model_config = _model_config_from_args(payload, shapes, path)
        flat = payload.get("config")
        config = _nested_config(flat if isinstance(flat, dict) else {})
        dataset = config["data"].get("dataset")
        tokenizer = None
        origin = "nanoGPT"
        tokens_seen, rng, scaler = 0, {}, {}
    weights = canonical_weights(raw, path)
    found = payload.get("config")
    if meta is not None or tokenizer is None:
        tokenizer = _find_tokenizer(
            path, found if isinstance(found, dict) else {}, meta, model_config, notes
        )
    top = fields.Fields({k: _plain(v) for k, v in payload.items() if isinstance(k, str)}, path)
    best = top.number("best_val_loss", None, infinite=True)
    state = TrainState(
        iter_num=top.integer("iter_num", 0),
        # nanoGPT starts from 1e9 ("no evaluation yet").
        best_val_loss=math.inf if best is None or best >= 1e9 else best,
        tokens_seen=tokens_seen,
        rng=rng,
    )
    files = [path]
    if (path.parent / META_FILE).is_file() and tokenizer and tokenizer.get("kind") == "char":
        files.append(path.parent / META_FILE)
    optimizer = payload.get("optimizer")
    return Checkpoint(
        model_config=model_config,
        tokenizer=tokenizer,
        state=state,
        dataset=dataset,
        config=config,
        path=path,
        format=UNIFIED,
        origin=origin,
        files=files,
        notes=notes,
        _weights=weights,
        _optimizer={"optimizer": optimizer, "scaler": scaler}
        if isinstance(optimizer, dict)
        else None,
    )


def _plain(value: Any) -> Any:
    """A one-element tensor (as nanoGPT stores ``best_val_loss``) as its number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def _model_config_from_args(
    payload: dict[str, Any], shapes: dict[str, tuple[int, ...]], path: Path
) -> ModelConfig:
    raw = payload.get("model_args")
    if not isinstance(raw, dict) or "n_head" not in raw:
        raise CheckpointDamaged(
            f"{path} has no model_args with n_head; it is not a nanoGPT ckpt.pt"
        )
    args = fields.Fields({str(k): _plain(v) for k, v in raw.items()}, path, "model_args")
    n_head = args.integer("n_head", low=1, high=fields.MAX_DIM)
    dropout = args.number("dropout", None, low=0.0, high=1.0) or 0.0
    # Shapes come from the weights; nanoGPT's model uses the exact GELU.
    cfg = fields.config_from_shapes(shapes, path, n_head=n_head, dropout=dropout)
    cfg.activation = "gelu"
    if cfg.n_embd % n_head:
        raise fields.invalid(
            path, "model_args.n_head", f"({n_head}) does not divide the weights' width {cfg.n_embd}"
        )
    if "bias" in args.value and args.boolean("bias") != cfg.bias:
        raise CheckpointDamaged(
            f"{path}: model_args says bias={args.value['bias']} but the weights "
            f"{'have' if cfg.bias else 'have no'} biases"
        )
    return cfg


def _find_tokenizer(
    path: Path,
    config: dict[str, Any],
    meta: str | Path | None,
    model_config: ModelConfig,
    notes: list[str],
) -> dict[str, Any] | None:
    """The tokenizer of a nanoGPT checkpoint: the vocabulary its ``meta.pkl`` holds.

    Looked for, in order: ``meta`` as given, ``meta.pkl`` beside the checkpoint, and
    ``data/<dataset>/meta.pkl`` under the current directory (where nanoGPT's ``sample.py``
    looks). Without one, a model with GPT-2's vocabulary is taken to use GPT-2's BPE, as
    nanoGPT's ``sample.py`` does.
    """
    candidates: list[Path] = []
    if meta is not None:
        explicit = Path(meta).expanduser()
        if not explicit.is_file():
            raise CheckpointError(f"--meta {explicit} does not exist")
        candidates.append(explicit)
    candidates.append(path.parent / META_FILE)
    dataset = config.get("dataset")
    if isinstance(dataset, str) and dataset:
        candidates.append(Path("data") / dataset / META_FILE)
    for candidate in candidates:
        if candidate.is_file():
            tokenizer = tokenizer_from_meta(load_plain_pickle(candidate), candidate)
            if len(tokenizer["chars"]) > (model_config.vocab_size or 0):
                raise CheckpointError(
                    f"{candidate} has {len(tokenizer['chars'])} characters but the model "
                    f"only {model_config.vocab_size} tokens; it belongs to another model"
                )
            if meta is None:
                notes.append(f"character vocabulary from {candidate}")
            return tokenizer
    if (model_config.vocab_size or 0) >= 50257:
        notes.append("no meta.pkl found: assuming GPT-2's BPE, as nanoGPT's sample.py does")
        return {"kind": "tiktoken", "name": "gpt2"}
    notes.append(f"no meta.pkl found beside {path} or in data/{dataset or '<dataset>'}/")
    return None


def tokenizer_from_meta(meta: Any, source: Path) -> dict[str, Any]:
    """Our character-tokenizer description from nanoGPT's ``meta.pkl`` dict."""
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict) or not itos:
        raise CheckpointError(f"{source} has no 'itos' vocabulary; is it nanoGPT's meta.pkl?")
    size = len(itos)
    if sorted(itos) != list(range(size)):
        raise CheckpointError(f"{source}: 'itos' does not map 0..{size - 1} to characters")
    chars = [itos[i] for i in range(size)]
    if not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise CheckpointError(
            f"{source}: 'itos' maps ids to strings longer than one character; only character "
            "vocabularies are read from a meta.pkl"
        )
    return {"kind": "char", "chars": "".join(chars)}
